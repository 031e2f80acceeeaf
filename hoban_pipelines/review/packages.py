"""CVAT task packages for reviewing pseudo-labels: building them into a folder, and creating the tasks.

A review task holds at most ``max_images`` images, go2k_manual first (the team's old run: part1 =
go2k 604 + captures 598, part2 and part3 captures). Task ``<task>`` is three files in the package
folder; ``manifest.parquet`` lists every image of every task. The layout follows CVAT's source:

- ``<task>.zip``: the images, stored byte for byte under their names in the task (subfolders
  allowed). ``ZipReader`` (cvat/apps/engine/media_extractors.py) keeps the members ``get_mime``
  calls images, skips names holding ``__MACOSX`` or ``.DS_Store`` (``files_to_ignore``) and
  ``extract`` unpacks them in place, so a frame's path in the task is its member name.
- ``<task>.jsonl``: CVAT's upload manifest (``ImageManifestManager``, utils/dataset_manifest/
  core.py), one name/extension/width/height line per image, in our order. CVAT sorts an
  archive's frames by name unless the sorting method is "predefined", and for a predefined zip
  ``_create_thread`` (cvat/apps/engine/task.py) requires a manifest ("Sorting with manifest is
  required for zip"), found among the uploaded files by ``_find_manifest_files``, allowed beside
  an archive by current CVAT's ``_validate_data`` (2022 releases refused it), and checked name
  for name against the zip by ``_restore_file_order_from_manifest``. Without it part1 would
  open on ``captures/...``.
- ``<task>.xml``: the pre-annotations, "CVAT for images 1.1" as our writer lays it out, imported
  with the "CVAT 1.1" format (``@importer(name='CVAT', ext='XML, ZIP', version='1.1')``,
  cvat/apps/dataset_manager/formats/cvat.py). ``match_dm_item`` (dataset_manager/bindings.py)
  finds an ``<image>``'s frame by name, then by id; here both agree, the id being the frame the
  manifest fixes. The XML stays out of the zip: the data upload would skip it, but
  ``annotation_path`` uploads a whole file, so a zip holding both would send every image twice.

CVAT has no confidence field, so the detector's score is the declared ``number`` attribute
``score`` with values "0;1;0.001" (min, max, step: cvat-core's ``validateAttributeValue`` checks
min <= value <= max, CVAT's label editor takes fractional bounds and steps; only cvat-sdk's
auto-annotation validator wants whole numbers), written with three decimals on model boxes
(``source="auto"``). A person's box (score None) has no score and ``source="manual"``; CVAT
gives it the default, 1, as it does every box a reviewer draws: a person is certain. There is no
``source`` attribute: an image's folder in its name already tells where it came from, and an
immutable select would make reviewers pick a value for every box they draw.

Plain Python, no Dagster; cvat-sdk (the ``cvat`` extra) is needed only to upload.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pandas as pd
from PIL import Image, UnidentifiedImageError

from hoban_pipelines.core.report import BuildReport, Table
from hoban_pipelines.core.yolo_format import IMAGE_SUFFIXES
from hoban_pipelines.cvat.reader import CvatFormatError, read_export
from hoban_pipelines.cvat.writer import AttributeSpec, BoxShape, ImageEntry, LabelSpec, write_images_export

if TYPE_CHECKING:
    from cvat_sdk import Client

GO2K_MANUAL, CAPTURES = "go2k_manual", "captures"
# Reviewers start on the human-labelled go2k images; within a source the caller's order holds.
SOURCE_ORDER = (GO2K_MANUAL, CAPTURES)
SCORE_DECIMALS = 3  # matches the attribute's step
SCORE_ATTRIBUTE = AttributeSpec("score", input_type="number", values=["0", "1", "0.001"], default="1")
MODEL_BOX, PERSON_BOX = "auto", "manual"  # CVAT's shape source
ANNOTATION_FORMAT = "CVAT 1.1"  # CVAT's import name; "CVAT for images 1.1" names only the export
SORTING_METHOD = "predefined"  # frames in the upload manifest's order
MANIFEST = "manifest.parquet"
TASK_PREFIX = "review"  # tasks are <prefix>_part1, _part2, ...
MANIFEST_COLUMNS = ["task", "frame", "name", "source", "camera", "path", "width", "height", "boxes", "sha256"]
TASK_COLUMNS = ["task", "images", *SOURCE_ORDER, "boxes", "bytes"]
# Names CVAT leaves out of a task (files_to_ignore; related_images folders hold 3D context
# images): their frames would be missing and the manifest would no longer match the zip.
_CVAT_SKIPPED_NAMES = ("__MACOSX", "__MSOSX", ".DS_Store")
_CVAT_SKIPPED_FOLDER = "related_images"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same images give the same zip
_EXIF_ORIENTATION = 274
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ReviewBox:
    """A box to review, in pixels of its image; ``score`` is the detector's, None for a person's box."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    score: float | None  # no default: a model box left unscored would pass for a person's


@dataclass(frozen=True)
class ReviewImage:
    """An image to review: ``path`` is the file, ``name`` its unique name inside the task (it may
    hold subfolders, e.g. ``captures/cam1/cam1_20260211_070546.jpg``), ``width`` and ``height``
    the size its boxes refer to."""

    path: Path
    name: str
    source: str  # one of SOURCE_ORDER
    width: int
    height: int
    boxes: tuple[ReviewBox, ...]
    camera: str | None = None


@dataclass(frozen=True)
class PackageFiles:
    """Where one task's package lies in the package folder: the one naming build and upload share."""

    task: str
    images: Path  # the zip
    frame_order: Path  # CVAT's upload manifest
    annotations: Path  # the pre-annotations

    @classmethod
    def of(cls, folder: Path, task: str) -> PackageFiles:
        return cls(task, folder / f"{task}.zip", folder / f"{task}.jsonl", folder / f"{task}.xml")


def build_review_packages(
    images: Sequence[ReviewImage],
    labels: Sequence[str],
    out_dir: Path,
    max_images: int = 1200,
    task_prefix: str = TASK_PREFIX,
) -> BuildReport:
    """Write one CVAT task package per ``max_images`` images into ``out_dir`` (a fresh folder).

    Tasks are ``<task_prefix>_part1``, ``_part2``, ... in review order: go2k_manual images, then
    captures. Every input is checked before the first file is written, the XML files (cheap, and
    checked again by the writer) before the zips, and each file is written atomically, so a
    failure leaves only whole files. Raises ValueError for ``max_images`` < 1, an unknown source,
    two images with one name, a name CVAT cannot keep, a box label not in ``labels``, a score
    outside [0, 1] or a size that is not the file's; FileNotFoundError for a missing file.
    """
    if max_images < 1:
        raise ValueError(f"max_images must be at least 1, got {max_images}")
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct label names, at least one, got {list(labels)}")
    ordered = _review_order(images)
    _check_images(ordered, labels)
    out_dir = Path(out_dir)
    tasks = {f"{task_prefix}_part{n}": ordered[start:start + max_images]
             for n, start in enumerate(range(0, len(ordered), max_images), start=1)}
    label_specs = [LabelSpec(label, [SCORE_ATTRIBUTE]) for label in labels]
    for task, members in tasks.items():
        write_images_export(PackageFiles.of(out_dir, task).annotations, task_name=task, labels=label_specs,
                            images=[_image_entry(frame, image) for frame, image in enumerate(members)])
    rows = []
    for task, members in tasks.items():
        files = PackageFiles.of(out_dir, task)
        digests = _write_images_zip(files.images, members)
        _write_frame_order(files.frame_order, members)
        rows += [_manifest_row(task, frame, image, digest)
                 for frame, (image, digest) in enumerate(zip(members, digests))]
    with _atomic(out_dir / MANIFEST) as temporary:
        pd.DataFrame(rows, columns=MANIFEST_COLUMNS).to_parquet(temporary, index=False)
    return _report(tasks, out_dir, labels, max_images)


def _review_order(images: Sequence[ReviewImage]) -> list[ReviewImage]:
    for image in images:
        if image.source not in SOURCE_ORDER:
            raise ValueError(f"{image.path}: source {image.source!r} is not one of {', '.join(SOURCE_ORDER)}")
    return sorted(images, key=lambda image: SOURCE_ORDER.index(image.source))  # stable within a source


def _check_images(images: Sequence[ReviewImage], labels: Sequence[str]) -> None:
    path_by_name: dict[str, Path] = {}
    for image in images:
        if image.name in path_by_name:
            raise ValueError(f"{path_by_name[image.name]} and {image.path} have the same task name {image.name!r}; "
                             "CVAT would keep one frame for both: give each image its own name")
        path_by_name[image.name] = image.path
        _check_name(image)
        where = f"image {image.name!r} ({image.path})"
        for box in image.boxes:
            if box.label not in labels:
                raise ValueError(f"{where}: box label {box.label!r} is not in labels ({', '.join(labels)}); "
                                 "add it to labels or drop the box")
            if box.score is not None and not 0.0 <= box.score <= 1.0:
                raise ValueError(f"{where}: a {box.label!r} box has score {box.score}, outside [0, 1], the range "
                                 "the score attribute declares")
        if not image.path.is_file():
            raise FileNotFoundError(f"image file {image.path} (task name {image.name!r}) does not exist")
        _check_size(image)


def _check_name(image: ReviewImage) -> None:
    """The name becomes the frame's path in CVAT and the key annotations are matched by."""
    name, pure = image.name, PurePosixPath(image.name)
    skipped = any(part in name for part in _CVAT_SKIPPED_NAMES) or _CVAT_SKIPPED_FOLDER in pure.parts[:-1]
    if (str(pure) != name or pure.is_absolute() or ".." in pure.parts or "\\" in name
            or pure.suffix.lower() not in IMAGE_SUFFIXES or skipped):
        raise ValueError(
            f"{image.path}: task name {name!r} cannot name a CVAT frame; use a relative path with single '/' "
            f"separators, no '.' or '..' parts, no {', '.join(_CVAT_SKIPPED_NAMES)} or {_CVAT_SKIPPED_FOLDER}/ "
            f"(CVAT skips those), ending in one of {', '.join(IMAGE_SUFFIXES)}")


def _check_size(image: ReviewImage) -> None:
    """CVAT measures the file upright by its EXIF orientation (``image_size_within_orientation``)."""
    try:
        with Image.open(image.path) as picture:
            width, height = picture.size
            if picture.getexif().get(_EXIF_ORIENTATION, 1) > 4:
                width, height = height, width
    except UnidentifiedImageError:
        raise ValueError(f"{image.path} is not an image that can be read") from None
    if (width, height) != (image.width, image.height):
        raise ValueError(f"{image.path} is {width}x{height} but its ReviewImage says {image.width}x{image.height}; "
                         "its boxes would be drawn in the wrong place")


def _image_entry(frame: int, image: ReviewImage) -> ImageEntry:
    return ImageEntry(frame, image.name, image.width, image.height, [_box_shape(box) for box in image.boxes])


def _box_shape(box: ReviewBox) -> BoxShape:
    if box.score is None:
        return BoxShape(box.label, box.x1, box.y1, box.x2, box.y2, source=PERSON_BOX)
    return BoxShape(box.label, box.x1, box.y1, box.x2, box.y2, source=MODEL_BOX,
                    attributes={SCORE_ATTRIBUTE.name: f"{box.score:.{SCORE_DECIMALS}f}"})


def _write_images_zip(path: Path, images: Sequence[ReviewImage]) -> list[str]:
    """Store each image under its task name; return the sha256 of each image's bytes as packed (one read)."""
    digests = []
    with _atomic(path) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as archive:
        for image in images:
            member = zipfile.ZipInfo(image.name, date_time=_ZIP_TIME)
            member.external_attr = 0o644 << 16
            digest = hashlib.sha256()
            with open(image.path, "rb") as source, archive.open(member, "w") as target:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    target.write(chunk)
            digests.append(digest.hexdigest())
    return digests


def _write_frame_order(path: Path, images: Sequence[ReviewImage]) -> None:
    """CVAT's upload manifest: two header lines, then one line per image in frame order."""
    lines: list[dict[str, Any]] = [{"version": "1.1"}, {"type": "images"}]
    for image in images:
        stem, extension = posixpath.splitext(image.name)  # CVAT's own split (os.path.splitext)
        lines.append({"name": stem, "extension": extension, "width": image.width, "height": image.height})
    with _atomic(path) as temporary:
        temporary.write_text("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))


def _manifest_row(task: str, frame: int, image: ReviewImage, sha256: str) -> dict[str, Any]:
    return {"task": task, "frame": frame, "name": image.name, "source": image.source, "camera": image.camera,
            "path": str(image.path), "width": image.width, "height": image.height, "boxes": len(image.boxes),
            "sha256": sha256}


def _report(tasks: dict[str, list[ReviewImage]], out_dir: Path, labels: Sequence[str], max_images: int) -> BuildReport:
    rows = [{"task": task, "images": len(members),
             **{source: sum(image.source == source for image in members) for source in SOURCE_ORDER},
             "boxes": sum(len(image.boxes) for image in members),
             "bytes": PackageFiles.of(out_dir, task).images.stat().st_size}
            for task, members in tasks.items()]
    return BuildReport(
        counts={"tasks": len(rows), "images": sum(row["images"] for row in rows),
                **{f"images_{source}": sum(row[source] for row in rows) for source in SOURCE_ORDER},
                "boxes": sum(row["boxes"] for row in rows)},
        details={"tasks": Table(rows, TASK_COLUMNS), "max_images": max_images, "labels": list(labels)},
        warnings=[] if rows else ["no images were given, so no review task was written"],
    )


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it when the body succeeds and removed when it fails."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def connect(host: str, username: str, password: str) -> Client:
    """A cvat-sdk client logged in to ``host`` (e.g. ``https://cvat.example.com``), for the upload."""
    _require_cvat_sdk()
    from cvat_sdk import make_client

    return make_client(host, credentials=(username, password))


def upload_review_packages(
    package_dir: Path,
    client: Client,
    project_id: int | None = None,
    labels: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Create one CVAT task per package in ``package_dir`` (as build_review_packages wrote it), in task order.

    Each task gets its zip and frame order (predefined sorting) and then its pre-annotations.
    Outside a project a task declares ``labels`` (default: those its package declares), each
    with the score attribute; inside ``project_id`` it uses the project's labels, which must hold
    every label of the packages and the score attribute: CVAT refuses annotations whose label or
    attribute the task lacks. Everything is checked before the first task is created. Returns
    ``{"name", "task_id", "images"}`` per task; a failure names the tasks already created.
    """
    _require_cvat_sdk()
    from cvat_sdk.api_client import models
    from cvat_sdk.core.proxies.tasks import ResourceType

    if project_id is not None and labels is not None:
        raise ValueError("a task inside a CVAT project has the project's labels: give labels or project_id, not both")
    packages = _packages(Path(package_dir))
    specs = [_task_spec(models, files, project_id, labels) for files, _ in packages]
    created: list[dict[str, Any]] = []
    for (files, images), spec in zip(packages, specs):
        try:
            task = client.tasks.create_from_data(
                spec=spec, resource_type=ResourceType.LOCAL, resources=[files.images, files.frame_order],
                data_params={"sorting_method": SORTING_METHOD},
                annotation_path=str(files.annotations), annotation_format=ANNOTATION_FORMAT)
        except Exception as exc:
            done = ", ".join(f"{row['name']} (id {row['task_id']})" for row in created) or "none"
            raise RuntimeError(f"creating CVAT task {files.task} failed ({exc}); tasks created before it: {done}. "
                               f"Delete those and any half-made {files.task} in CVAT before uploading again") from exc
        created.append({"name": files.task, "task_id": task.id, "images": images})
    return created


def last_task_annotations(package_dir: Path) -> Path:
    """The pre-annotations of the last task of a package folder (the one of captures only, when
    there are several)."""
    return _packages(Path(package_dir))[-1][0].annotations


def task_frames(package_dir: Path, task: str) -> dict[int, tuple[str, int, int]]:
    """A task's frames as its package fixed them: frame number -> (image name, width, height), what a
    "CVAT for video" export of the task leaves out."""
    manifest = pd.read_parquet(Path(package_dir) / MANIFEST, columns=["task", "frame", "name", "width", "height"])
    mine = manifest[manifest["task"] == task]
    return {int(row.frame): (row.name, int(row.width), int(row.height)) for row in mine.itertuples(index=False)}


def package_with(export: Path, package_dirs: Sequence[Path]) -> Path:
    """The first package folder whose tasks hold every image of the CVAT export ``export``; an
    error naming the images no package holds otherwise (or the reader's, when the export cannot
    be read against any of them)."""
    missing: set[str] | None = None
    unreadable: CvatFormatError | None = None
    for folder in map(Path, package_dirs):
        try:
            names = {image.name for image in read_export(export, frame_names=lambda task: task_frames(folder, task)).images}
        except CvatFormatError as error:  # a video export of a task this folder does not hold, or a broken file
            unreadable = unreadable or error
            continue
        held = set(pd.read_parquet(folder / MANIFEST, columns=["name"])["name"])
        if names <= held:
            return folder
        missing = (names - held) if missing is None else missing & (names - held)
    if missing is None:
        if unreadable is not None:
            raise unreadable
        raise ValueError(f"{export}: there are no review packages yet; materialize cvat_review_packages")
    shown = ", ".join(sorted(missing)[:10])
    raise ValueError(f"{export}: {len(missing)} of its images are in no review package (e.g. {shown}); "
                     "export a task created from cvat_review_packages")


def _packages(package_dir: Path) -> list[tuple[PackageFiles, int]]:
    """Each task's files and image count, in the manifest's task order (by name, part10 precedes part2)."""
    manifest = package_dir / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} is missing: {package_dir} is not a folder build_review_packages wrote")
    packages = []
    for task, images in Counter(pd.read_parquet(manifest, columns=["task"])["task"]).items():
        files = PackageFiles.of(package_dir, task)
        for path in (files.images, files.frame_order, files.annotations):
            if not path.is_file():
                raise FileNotFoundError(f"{path} of task {task} is missing; build the packages again")
        packages.append((files, images))
    return packages


def _task_spec(models: Any, files: PackageFiles, project_id: int | None, labels: Sequence[str] | None) -> Any:
    """cvat-sdk's TaskWriteRequest; the SDK refuses labels on a task inside a project."""
    if project_id is not None:
        return models.TaskWriteRequest(name=files.task, project_id=project_id)
    declared = list(read_export(files.annotations).labels)
    task_labels = declared if labels is None else list(labels)
    missing = [label for label in declared if label not in task_labels]
    if missing:
        raise ValueError(f"{files.annotations} declares labels {missing} that labels lacks; CVAT would refuse "
                         "the pre-annotations: pass every label the packages were built with")
    return models.TaskWriteRequest(name=files.task, labels=[
        models.PatchedLabelRequest(name=label, attributes=[_score_request(models)]) for label in task_labels])


def _score_request(models: Any) -> Any:
    return models.AttributeRequest(name=SCORE_ATTRIBUTE.name, mutable=SCORE_ATTRIBUTE.mutable,
                                   input_type=SCORE_ATTRIBUTE.input_type, values=list(SCORE_ATTRIBUTE.values),
                                   default_value=SCORE_ATTRIBUTE.default)


def _require_cvat_sdk() -> None:
    """cvat-sdk is an optional extra: say how to get it rather than fail on a bare import."""
    try:
        import cvat_sdk  # noqa: F401
    except ImportError:
        raise ImportError("creating CVAT tasks needs cvat-sdk, which is not installed: "
                          "pip install 'hoban_pipelines[cvat]'") from None
