"""The Kubernetes deployment, checked offline: no cluster and no helm binary exist here.

The Helm values use only keys the official chart knows (the fields of its values schema), agree
with deploy/dagster.yaml and the lake claim; every Kubernetes object in
them and in deploy/k8s/ is read by the kubernetes client's own models; a GPU job's run tag goes
through dagster_k8s' own K8sRunLauncher and job builder into a run pod with the lake and a GPU;
and the training pod is the body PipesK8sClient would create.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import construct_dagster_k8s_job, get_user_defined_k8s_config
from dagster_k8s.pipes import build_pod_body
from kubernetes.client import ApiClient

from hoban_pipelines.definitions import defs
from hoban_pipelines.resources.kubernetes import (
    CHILD_MODULE, GPU_K8S_CONFIG, GPU_NODE_SELECTOR, GPU_RESOURCE, K8S_CONFIG_TAG, TrainingChild, TrainingChildError,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VALUES = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
INSTANCE = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
LAKE_CLAIM = yaml.safe_load((DEPLOY / "k8s" / "lake-pvc.yaml").read_text())
SECRETS = list(yaml.safe_load_all((DEPLOY / "k8s" / "secrets.example.yaml").read_text()))
DEPLOYMENT = VALUES["dagster-user-deployments"]["deployments"][0]
RUN_LAUNCHER = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
IMAGE = "registry.example.com/hoban-pipelines:0.1.0"
GPU_JOBS = {"pipeline_job", "evaluation_job", "review_round_job", "retrain_job"}


def fields(names: str, **nested):
    """Known keys: each name a leaf (any value), each keyword a section with its own keys."""
    return {**dict.fromkeys(names.split()), **nested}


# The chart's values schema for the sections these values set: the field names of the pydantic
# models its values.schema.json is generated from (helm/dagster/schema in dagster-io/dagster).
# Kubernetes objects inside are leaves here and read by the kubernetes client below.
USER_DEPLOYMENT = fields(
    "name image dagsterApiGrpcArgs codeServerArgs includeConfigInLaunchedRuns deploymentNamespace port env "
    "envConfigMaps envSecrets annotations nodeSelector affinity tolerations podSecurityContext securityContext "
    "resources livenessProbe readinessProbe startupProbe labels volumeMounts volumes schedulerName initContainers "
    "sidecarContainers deploymentStrategy",
    image=fields("repository tag pullPolicy"),
)
CHART_VALUES = fields(
    "generatePostgresqlPasswordSecret generateCeleryConfigSecret rabbitmq redis flower imagePullSecrets "
    "computeLogManager scheduler pythonLogs busybox migrate serviceAccount additionalInstanceConfig",
    **{
        "global": fields("postgresqlSecretName dagsterHome serviceAccountName celeryConfigSecretName "
                         "dagsterInstanceConfigMap"),
        "postgresql": fields("postgresqlScheme image enabled postgresqlHost postgresqlUsername postgresqlPassword "
                             "postgresqlDatabase postgresqlParams", service=fields("port")),
        "dagsterWebserver": fields(
            "replicaCount image nameOverride pathPrefix workspace env envConfigMaps envSecrets deploymentLabels labels "
            "nodeSelector affinity tolerations podSecurityContext securityContext resources readinessProbe "
            "livenessProbe startupProbe annotations enableReadOnly dbStatementTimeout dbPoolRecycle logLevel "
            "schedulerName volumeMounts volumes",
            service=fields("annotations type port"),
        ),
        "ingress": fields("enabled apiVersion labels annotations dagsterWebserver readOnlyDagsterWebserver flower"),
        "telemetry": fields("enabled"),
        "dagster-user-deployments": fields("enabled enableSubchart imagePullSecrets", deployments=[USER_DEPLOYMENT]),
        "runLauncher": fields("type", config=fields("celeryK8sRunLauncher customRunLauncher", k8sRunLauncher=fields(
            "image imagePullPolicy jobNamespace loadInclusterConfig kubeconfigFile envConfigMaps envSecrets envVars "
            "volumeMounts volumes labels failPodOnRunFailure resources schedulerName securityContext runK8sConfig"))),
        "dagsterDaemon": fields(
            "enabled image heartbeatTolerance env envConfigMaps envSecrets deploymentLabels labels nodeSelector "
            "affinity tolerations podSecurityContext securityContext resources checkDbReadyInitContainer livenessProbe "
            "readinessProbe startupProbe annotations sensors schedules backfills schedulerName logFormat volumeMounts "
            "volumes initContainerResources extraContainers extraPrependedInitContainers",
            runCoordinator=fields("enabled type", config=fields("customRunCoordinator", queuedRunCoordinator=fields(
                "maxConcurrentRuns tagConcurrencyLimits dequeueIntervalSeconds dequeueNumWorkers dequeueUseThreads "
                "blockOpConcurrencyLimitedRuns"))),
            # a free-form map in the schema: the keys the chart's instance template reads
            runMonitoring=fields("enabled startTimeoutSeconds cancelTimeoutSeconds maxResumeRunAttempts "
                                 "pollIntervalSeconds freeSlotsAfterRunEndSeconds"),
            runRetries=fields("enabled maxRetries retryOnAssetOrOpFailure"),
        ),
        "concurrency": fields("enabled", pools=fields("defaultLimit granularity opGranularityRunBuffer"),
                              runs=fields("maxConcurrentRuns tagConcurrencyLimits")),
        "retention": fields("enabled", **{kind: fields("", purgeAfterDays=fields("skipped success failure started"))
                                         for kind in ("sensor", "schedule", "autoMaterialize")}),
    },
)


def unknown_keys(values, known, path="") -> list[str]:
    if isinstance(known, list):
        return [bad for i, item in enumerate(values) for bad in unknown_keys(item, known[0], f"{path}[{i}]")]
    if known is None or not isinstance(values, dict):  # a leaf, or a scalar where a map may also stand
        return []
    return [bad for key, value in values.items()
            for bad in ([f"{path}.{key}"] if key not in known else unknown_keys(value, known[key], f"{path}.{key}"))]


class _Response:
    """What ``ApiClient.deserialize`` reads of an HTTP response: its body."""

    def __init__(self, body):
        self.data = json.dumps(body)


def kubernetes_object(body, kind: str):
    """``body`` read as the kubernetes client reads an API server's answer; a key the model does not
    have would be dropped silently, so the object must serialize back to ``body``."""
    with ApiClient() as client:
        model = client.deserialize(_Response(body), kind)
        assert client.sanitize_for_serialization(model) == body, f"{kind} has keys Kubernetes does not know: {body}"
    return model


def _env(container) -> dict[str, str]:
    return {var["name"]: var["value"] for var in container["env"]}


def test_values_use_only_keys_the_chart_knows():
    assert unknown_keys(VALUES, CHART_VALUES) == []


def test_the_user_deployment_serves_the_code_location():
    module = DEPLOYMENT["dagsterApiGrpcArgs"]
    assert module[0] == "-m" and hasattr(importlib.import_module(module[1]), "defs")
    assert module[1] == "hoban_pipelines.definitions"
    assert DEPLOYMENT["includeConfigInLaunchedRuns"]["enabled"] is True  # run pods get its env and volumes
    env = _env(DEPLOYMENT)
    assert env["YOLO_OFFLINE"] == "1" and env["YOLO_AUTOINSTALL"] == "false"
    assert env["HOBAN_CONFIG"].startswith(env["HOBAN_HOME"] + "/")  # the settings file lies on the shared lake
    for var in DEPLOYMENT["env"]:
        kubernetes_object(var, "V1EnvVar")
    kubernetes_object(DEPLOYMENT["resources"], "V1ResourceRequirements")


@pytest.mark.parametrize("pod", ["user deployment", "run launcher"])
def test_every_pod_mounts_the_lake_claim_where_hoban_home_points(pod):
    section = DEPLOYMENT if pod == "user deployment" else RUN_LAUNCHER
    volumes = {v["name"]: kubernetes_object(v, "V1Volume") for v in section["volumes"]}
    mounts = [kubernetes_object(m, "V1VolumeMount") for m in section["volumeMounts"]]
    lake = next(m for m in mounts if volumes[m.name].persistent_volume_claim)
    child = TrainingChild()
    assert volumes[lake.name].persistent_volume_claim.claim_name == LAKE_CLAIM["metadata"]["name"] == child.lake_claim
    assert lake.mount_path == _env(DEPLOYMENT)["HOBAN_HOME"] == child.lake_mount_path


def test_runs_launch_as_kubernetes_jobs_and_nothing_listens_outside_the_cluster():
    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"
    assert VALUES["dagsterWebserver"]["service"]["type"] == "ClusterIP"
    assert VALUES["ingress"]["enabled"] is False
    assert VALUES["telemetry"]["enabled"] is False


def test_secrets_come_from_secrets_the_examples_show_and_no_password_is_in_values():
    assert VALUES["generatePostgresqlPasswordSecret"] is False and VALUES["postgresql"]["enabled"] is False
    assert "postgresqlPassword" not in VALUES["postgresql"]
    secrets = {s["metadata"]["name"]: kubernetes_object(s, "V1Secret") for s in SECRETS}
    assert "postgresql-password" in secrets[VALUES["global"]["postgresqlSecretName"]].string_data
    for source in [*DEPLOYMENT["envSecrets"], *RUN_LAUNCHER["envSecrets"]]:
        assert kubernetes_object(source, "V1SecretEnvSource").name in secrets
    assert {"CVAT_HOST", "CVAT_USERNAME", "CVAT_PASSWORD"} <= set(secrets[DEPLOYMENT["envSecrets"][0]["name"]].string_data)


def test_the_instance_is_the_one_in_deploy_dagster_yaml():
    daemon = VALUES["dagsterDaemon"]
    assert daemon["runCoordinator"]["type"] == INSTANCE["run_coordinator"]["class"]
    assert (daemon["runCoordinator"]["config"]["queuedRunCoordinator"]["dequeueIntervalSeconds"]
            == INSTANCE["run_coordinator"]["config"]["dequeue_interval_seconds"])
    assert VALUES["concurrency"]["enabled"] is True
    assert VALUES["concurrency"]["pools"]["defaultLimit"] == INSTANCE["concurrency"]["pools"]["default_limit"] == 1
    assert VALUES["concurrency"]["runs"]["maxConcurrentRuns"] == INSTANCE["concurrency"]["runs"]["max_concurrent_runs"]
    retries = INSTANCE["run_retries"]
    assert daemon["runRetries"] == {"enabled": retries["enabled"], "maxRetries": retries["max_retries"],
                                    "retryOnAssetOrOpFailure": retries["retry_on_asset_or_op_failure"]}
    monitoring = INSTANCE["run_monitoring"]
    for key, value in daemon["runMonitoring"].items():
        if key != "maxResumeRunAttempts":  # Kubernetes only: a dead run pod is retried, not resumed
            snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
            assert value == monitoring[snake], key
    assert VALUES["retention"]["schedule"]["purgeAfterDays"] == INSTANCE["retention"]["schedule"]["purge_after_days"]
    sensor_days = VALUES["retention"]["sensor"]["purgeAfterDays"]
    assert {k: sensor_days[k] for k in INSTANCE["retention"]["sensor"]["purge_after_days"]} == \
        INSTANCE["retention"]["sensor"]["purge_after_days"]


def test_the_lake_claim_is_a_read_write_many_persistent_volume_claim():
    claim = kubernetes_object(LAKE_CLAIM, "V1PersistentVolumeClaim")
    assert claim.kind == "PersistentVolumeClaim"
    assert claim.spec.access_modes == ["ReadWriteMany"]
    assert claim.spec.resources.requests["storage"]


def test_exactly_the_jobs_with_a_gpu_step_carry_the_gpu_pod_config():
    tagged = set()
    for job in defs.resolve_all_job_defs():
        if job.name.startswith("__"):
            continue
        has_gpu_step = any(op.pool == "gpu" for op in job.graph.iterate_op_defs())
        assert (K8S_CONFIG_TAG in job.run_tags) == has_gpu_step, job.name
        if has_gpu_step:
            assert json.loads(job.run_tags[K8S_CONFIG_TAG]) == GPU_K8S_CONFIG
            tagged.add(job.name)
    assert tagged == GPU_JOBS


def test_a_gpu_run_pod_from_the_charts_run_launcher_has_the_lake_and_a_gpu(tmp_path):
    # a kubeconfig is all K8sRunLauncher reads when it starts; nothing here talks to a cluster
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "offline",
        "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "offline", "user": {"token": "unused"}}],
        "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}],
    }))
    # the run launcher's config as the chart's instance template writes it from the values
    launcher = K8sRunLauncher(
        service_account_name="dagster", instance_config_map="dagster-instance", dagster_home="/opt/dagster/dagster_home",
        load_incluster_config=False, kubeconfig_file=str(kubeconfig), job_namespace="hoban",
        env_secrets=[secret["name"] for secret in RUN_LAUNCHER["envSecrets"]],
        volumes=RUN_LAUNCHER["volumes"], volume_mounts=RUN_LAUNCHER["volumeMounts"],
    )
    job_def = defs.resolve_job_def("pipeline_job")
    get_user_defined_k8s_config(job_def.run_tags)  # the tag's own schema check
    run = dg.DagsterRun(job_name=job_def.name, run_id="0123abcd", tags=job_def.run_tags)
    context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        context.get_k8s_job_config(job_image=IMAGE, run_launcher=launcher), args=["dagster", "api", "execute_run"],
        job_name="dagster-run-0123abcd", user_defined_k8s_config=context.run_k8s_config,
    )
    pod = job.spec.template.spec
    container = pod.containers[0]
    assert container.resources.limits[GPU_RESOURCE] == "1"
    assert pod.node_selector == GPU_NODE_SELECTOR
    assert [t.key for t in pod.tolerations] == [GPU_RESOURCE]
    claims = {v.name: v.persistent_volume_claim.claim_name for v in pod.volumes if v.persistent_volume_claim}
    assert {m.mount_path: claims.get(m.name) for m in container.volume_mounts} == {
        "/lake": "hoban-lake", "/dev/shm": None}
    assert [source.secret_ref.name for source in container.env_from if source.secret_ref] == ["hoban-cvat"]


def test_the_training_pod_mounts_the_lake_and_asks_for_a_gpu():
    child = TrainingChild(launcher="kubernetes", image=IMAGE)
    arguments = child.pod_arguments(IMAGE, {"YOLO_OFFLINE": "1"})
    # what PipesK8sClient.run builds from these arguments, before it creates the pod
    pod = build_pod_body(pod_name="dagster-train", image=arguments["image"], command=arguments["command"],
                         env_vars=arguments["env"], base_pod_meta=None, base_pod_spec=arguments["base_pod_spec"])
    container = pod.spec.containers[0]
    assert container.image == IMAGE
    assert container.command == ["python", "-m", CHILD_MODULE]
    assert {var.name: var.value for var in container.env} == {"YOLO_OFFLINE": "1", "HOBAN_HOME": "/lake"}
    assert container.resources.limits == {GPU_RESOURCE: "1"}
    claims = {v.name: v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim}
    assert {m.mount_path: claims.get(m.name) for m in container.volume_mounts} == {
        "/lake": "hoban-lake", "/dev/shm": None}
    assert pod.spec.node_selector == GPU_NODE_SELECTOR
    assert [t.key for t in pod.spec.tolerations] == [GPU_RESOURCE]
    assert pod.spec.restart_policy == "Never"
    assert arguments["namespace"] is None  # the run pod's own namespace


def test_a_training_pod_refuses_a_lake_at_another_path():
    child = TrainingChild(launcher="kubernetes", image=IMAGE)
    with pytest.raises(TrainingChildError, match="mounts the lake at /lake, but this run's lake is /srv/hoban"):
        child.run(dg.build_asset_context(), extras={}, env={}, home=Path("/srv/hoban"))


def test_an_unknown_launcher_names_the_ones_there_are():
    with pytest.raises(TrainingChildError, match="launcher 'helm' is not one of subprocess, kubernetes"):
        TrainingChild(launcher="helm").run(dg.build_asset_context(), extras={}, env={}, home=Path("/lake"))
