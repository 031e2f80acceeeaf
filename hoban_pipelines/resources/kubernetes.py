"""Kubernetes for the team deployment: GPU pods for GPU runs, and where the training child runs.

A job with a ``gpu``-pool step carries the ``dagster-k8s/config`` run tag (``gpu_run_tags``), which
the K8sRunLauncher turns into the run pod's GPU limit, node selector and toleration; the
DefaultRunLauncher ignores it, so a run on one machine is unchanged. ``TrainingChild`` runs
``python -m hoban_pipelines.training.child`` as a subprocess of the run (the default) or in a pod
of its own through ``PipesK8sClient``, with the lake's ReadWriteMany claim mounted at the path
HOBAN_HOME has in every pod, so the paths in the job mean the same files on both sides.
dagster_k8s (the ``k8s`` extra) is imported only when a pod is asked for.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

GPU_POOL = "gpu"
K8S_CONFIG_TAG = "dagster-k8s/config"
CHILD_MODULE = "hoban_pipelines.training.child"
CLASSIFIER_CHILD_MODULE = "hoban_pipelines.training.classifier_child"  # the crop classifiers'
LAUNCHERS = ("subprocess", "kubernetes")

GPU_RESOURCE = "nvidia.com/gpu"
# the label NVIDIA's GPU feature discovery puts on GPU nodes, and the taint GPU node pools carry
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
# what a training or sliced-inference step needs beside the GPU: dataloader workers and decoded frames
GPU_STEP_REQUESTS = {"cpu": "4", "memory": "16Gi"}
# PyTorch dataloader workers pass batches through /dev/shm, which a container caps at 64 MiB
SHARED_MEMORY = {"name": "dshm", "empty_dir": {"medium": "Memory", "size_limit": "8Gi"}}
SHARED_MEMORY_MOUNT = {"name": "dshm", "mount_path": "/dev/shm"}
LAKE_VOLUME = "lake"


def gpu_container_config(gpus: int = 1) -> dict[str, Any]:
    return {
        "resources": {"requests": GPU_STEP_REQUESTS, "limits": {GPU_RESOURCE: str(gpus)}},
        "volume_mounts": [SHARED_MEMORY_MOUNT],
    }


def gpu_pod_spec_config(node_selector: Mapping[str, str] = GPU_NODE_SELECTOR) -> dict[str, Any]:
    return {"node_selector": dict(node_selector), "tolerations": GPU_TOLERATIONS, "volumes": [SHARED_MEMORY]}


# The value of the dagster-k8s/config tag of GPU work (dagster_k8s merges it deeply into the run pod).
GPU_K8S_CONFIG = {"container_config": gpu_container_config(), "pod_spec_config": gpu_pod_spec_config()}


def gpu_asset_keys(assets: Sequence[dg.AssetsDefinition | dg.AssetSpec]) -> set[dg.AssetKey]:
    """The keys computed by a step in the ``gpu`` pool."""
    return {key for asset in assets if isinstance(asset, dg.AssetsDefinition) and asset.is_executable
            and asset.node_def.pool == GPU_POOL for key in asset.keys}


def gpu_run_tags(selection: dg.AssetSelection, assets: Sequence[dg.AssetsDefinition | dg.AssetSpec]) -> dict[str, str]:
    """The run tags of a job selecting ``selection`` out of ``assets``: the GPU pod config when
    one of its steps is in the ``gpu`` pool, else none."""
    if selection.resolve(assets) & gpu_asset_keys(assets):
        return {K8S_CONFIG_TAG: json.dumps(GPU_K8S_CONFIG)}
    return {}


class TrainingChildError(Exception):
    """The training child cannot run as its resource is configured."""


class TrainingChild(dg.ConfigurableResource):
    """How the training child runs. ``launcher``: 'subprocess' (beside the run, on its machine or
    in its pod, with its GPU) or 'kubernetes' (a pod of its own through PipesK8sClient, with
    ``gpus`` GPUs on a node matching ``node_selector``, the lake claim mounted at
    ``lake_mount_path``). ``image`` empty: the image the run itself runs (the code location's);
    ``namespace`` empty: the run pod's own."""

    launcher: str = "subprocess"
    image: str = ""
    namespace: str = ""
    lake_claim: str = "hoban-lake"  # a ReadWriteMany PersistentVolumeClaim (deploy/k8s/lake-pvc.yaml)
    lake_mount_path: str = "/lake"  # HOBAN_HOME in every pod
    gpus: int = 1
    node_selector: dict[str, str] = GPU_NODE_SELECTOR

    def run(self, context: dg.AssetExecutionContext, *, extras: Mapping[str, Any], env: Mapping[str, str],
            home: Path, module: str = CHILD_MODULE) -> dg.PipesClientCompletedInvocation:
        """Run the child ``module`` (the detectors' by default, or the crop classifiers') with the
        job in ``extras``; ``home`` is the lake root its paths lie under."""
        if self.launcher == "subprocess":
            return dg.PipesSubprocessClient().run(
                context=context, command=[sys.executable, "-m", module], extras=extras, env=env)
        if self.launcher == "kubernetes":
            from dagster_k8s import PipesK8sClient

            if Path(home) != Path(self.lake_mount_path):
                raise TrainingChildError(
                    f"the training pod mounts the lake at {self.lake_mount_path}, but this run's lake is {home}: "
                    f"set HOBAN_HOME={self.lake_mount_path} in every pod (deploy/helm/values.yaml), or "
                    "training_child.lake_mount_path to the lake's path"
                )
            origin = context.run.job_code_origin
            image = self.image or (origin.repository_origin.container_image if origin else None)
            if not image:
                raise TrainingChildError("training_child launcher 'kubernetes' needs an image: set training_child.image "
                                         "(the run records no image of its own outside Kubernetes)")
            return PipesK8sClient().run(context=context, extras=extras, **self.pod_arguments(image, env, module))
        raise TrainingChildError(f"training_child launcher {self.launcher!r} is not one of {', '.join(LAUNCHERS)}")

    def pod_arguments(self, image: str, env: Mapping[str, str], module: str = CHILD_MODULE) -> dict[str, Any]:
        """What ``PipesK8sClient.run`` gets besides the context and extras: the child's command in
        ``image`` and a pod spec with the lake, the GPUs, the node selector and the toleration."""
        container = gpu_container_config(self.gpus)
        container["volume_mounts"] = [{"name": LAKE_VOLUME, "mount_path": self.lake_mount_path},
                                      *container["volume_mounts"]]
        pod_spec = gpu_pod_spec_config(self.node_selector)
        pod_spec["volumes"] = [{"name": LAKE_VOLUME, "persistent_volume_claim": {"claim_name": self.lake_claim}},
                               *pod_spec["volumes"]]
        return {
            "image": image,
            "command": ["python", "-m", module],
            "namespace": self.namespace or None,
            "env": {**env, "HOBAN_HOME": self.lake_mount_path},
            "base_pod_spec": {**pod_spec, "containers": [container]},
        }
