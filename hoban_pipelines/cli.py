"""The `hoban` command: everything a user can do without the Dagster UI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from hoban_pipelines.demo import PROFILES
from hoban_pipelines.core.lake import LakeError
from hoban_pipelines.core.settings import ConfigError, hoban_home, load_settings



def _user_errors() -> tuple[type[Exception], ...]:
    from hoban_pipelines.cvat.reader import CvatFormatError
    from hoban_pipelines.cvat.rle import RleError
    from hoban_pipelines.labels.cvat_import import DatasetError
    from hoban_pipelines.demo.install import SiteExistsError
    from hoban_pipelines.labels.label_map import LabelMapError

    return (ConfigError, LakeError, SiteExistsError, RleError, CvatFormatError, DatasetError, LabelMapError, FileExistsError)


class UserErrorGroup(click.Group):
    """Bad input ends in one clear line, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except _user_errors() as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=UserErrorGroup)
def main() -> None:
    """hoban_pipelines: helmet detection datasets, models and reviews as Dagster assets."""


@main.command("demo-site")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Folder to create.")
@click.option("--seed", default=7, show_default=True, help="Same seed, same bytes.")
@click.option("--profile", default="demo", show_default=True, type=click.Choice(sorted(PROFILES)), help="Size profile.")
@click.option("--replace", is_flag=True, help="Rename an existing different site aside instead of refusing.")
def demo_site_command(out: Path, seed: int, profile: str, replace: bool) -> None:
    """Generate the embedded demo site (synthetic CCTV data shaped like the team's)."""
    from hoban_pipelines.demo.install import install_site

    summary, status = install_site(out, seed=seed, profile=profile, replace=replace)
    click.echo(f"demo site {status}: {out.resolve()}")
    click.echo(json.dumps(summary["counts"], indent=2, sort_keys=True))


@main.command("config")
@click.option("--check", is_flag=True, help="Also check that every configured path exists and is readable.")
def config_command(check: bool) -> None:
    """Show the settings in force (and where they come from)."""
    settings = load_settings()
    click.echo(f"# settings from {settings.source}; HOBAN_HOME={hoban_home()}")
    click.echo(json.dumps(settings.as_dict(), indent=2))
    if not check:
        return
    problems = []
    for key, is_file in _input_settings(settings):
        try:
            click.echo(f"ok  {key}: {settings.require(key, file=is_file)}")
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise click.ClickException("\n".join(problems))


def _input_settings(settings) -> list[tuple[str, bool]]:
    """(setting, is a file) for every configured input path."""
    keys = [("cvat_exports", False), ("snapshots", False), ("base_dataset", False)]
    keys += [(key, True) for key in ("base_checkpoint", "label_map") if getattr(settings, key)]
    return keys + [(f"captures.{cam}", False) for cam in sorted(settings.captures)]


@main.command("demo")
@click.option("--replace-site", is_flag=True, help="Regenerate a demo site that differs from the settings.")
def demo_command(replace_site: bool) -> None:
    """Run the whole pipeline on the embedded demo site, on the local Dagster instance."""
    from hoban_pipelines.demo_run import run_demo

    os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve()))
    ok = run_demo(replace_site=replace_site, echo=click.echo)
    if not ok:
        sys.exit(1)


@main.group("cvat")
def cvat_group() -> None:
    """Read CVAT exports (CVAT for images/video 1.1, XML or export .zip)."""


@cvat_group.command("inspect")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per file.")
@click.option("--boxes", is_flag=True, help="Also list every box yielded.")
def cvat_inspect(files: tuple[Path, ...], as_json: bool, boxes: bool) -> None:
    """Count images, tracks, shapes and boxes per label in each export."""
    from hoban_pipelines.cvat.reader import read_export, summarize

    summaries = [summarize(read_export(path), with_boxes=boxes) for path in files]
    if as_json:
        click.echo(json.dumps(summaries, indent=2))
        return
    for summary in summaries:
        shapes = ", ".join(f"{tag} {n}" for tag, n in summary["shapes"].items() if n)
        labels = ", ".join(f"{label} {n}" for label, n in summary["boxes_by_label"].items())
        click.echo(f"{summary['file']}: {summary['images']} images, {summary['tracks']} tracks; shapes: {shapes or 'none'}")
        click.echo(f"  boxes by label: {labels or 'none'}")


@cvat_group.command("to-yolo")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="New dataset folder (must not exist).")
@click.option("--images", "images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder the exports' image names are relative to (default: the first export's folder).")
@click.option("--label-map", "label_map", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML mapping CVAT labels (+ attributes) to classes; default: labels are the classes.")
@click.option("--classes", default="person_with_helmet,person_without_helmet", show_default=True,
              help="Comma-separated class names, in index order, when no label map names them.")
@click.option("--clean", "rule", default="none", show_default=True, type=click.Choice(["none", "small_box", "recurring_small"]),
              help="Remove pre-annotation false boxes (see README).")
def cvat_to_yolo(files, out: Path, images: Path | None, label_map: Path | None, classes: str, rule: str) -> None:
    """Write a YOLO dataset (images, labels, data.yaml, Parquet manifests) from CVAT exports."""
    from hoban_pipelines.labels.cleaning import CleaningRule
    from hoban_pipelines.labels.cvat_import import build_dataset
    from hoban_pipelines.labels.label_map import LabelMap
    from hoban_pipelines.core.lake import publish_directory

    class_names = [c.strip() for c in classes.split(",") if c.strip()]
    mapping = LabelMap.load(label_map, class_names) if label_map else LabelMap.identity(class_names)
    with publish_directory(out) as staging:
        _, boxes, report = build_dataset(
            list(files), staging, label_map=mapping, rule=CleaningRule(rule), image_root=images or files[0].parent
        )
    click.echo(f"wrote {out}: {sum(p['images'] for p in report.parts.values())} image entries, {len(boxes)} boxes, "
               f"{report.removed} removed by cleaning, {len(report.conflicts)} conflicts")


@main.group("dedup")
def dedup_group() -> None:
    """Near-duplicate images and frozen CCTV frames in a folder (reports only: nothing is deleted)."""


def _images_in(folder: Path) -> list[Path]:
    from hoban_pipelines.core.yolo_format import IMAGE_SUFFIXES

    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise click.ClickException(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


@dedup_group.command("near")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--threshold", type=float, default=None, help="Similarity at or above which two images pair "
              "(default 0.98 for the opencv backend; fastdup has its own scale and no default).")
@click.option("--backend", type=click.Choice(["opencv", "fastdup"]), default="opencv", show_default=True,
              help="fastdup is optional and licensed non-commercially (see README).")
def dedup_near(folder: Path, threshold: float | None, backend: str) -> None:
    """Pairs of near-duplicate images as JSON lines: {"a", "b", "similarity"}."""
    from hoban_pipelines.datasets import near_duplicates

    images = _images_in(folder)
    if backend == "fastdup":
        if threshold is None:
            raise click.ClickException("the fastdup backend needs --threshold: its similarity is not this project's cosine")
        pairs = near_duplicates.near_duplicate_pairs_fastdup(images, threshold)
    else:
        thumbs = near_duplicates.thumbnails(images)
        for path, reason in thumbs.skipped:
            click.echo(f"skipped {path}: {reason}", err=True)
        pairs = near_duplicates.near_duplicate_pairs(thumbs, threshold or near_duplicates.DEFAULT_THRESHOLD)
    for i, j, similarity in pairs:
        click.echo(json.dumps({"a": str(images[i].relative_to(folder)), "b": str(images[j].relative_to(folder)),
                               "similarity": round(similarity, 5)}))


@dedup_group.command("frozen")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--threshold", type=float, default=None, help="Block-max mean absolute difference below which a "
              "frame repeats the last live one (default 0.45, calibrated on the demo captures).")
def dedup_frozen(folder: Path, threshold: float | None) -> None:
    """One camera's frames, in file-name order (time-stamped names sort by time): the frozen ones as JSON."""
    from hoban_pipelines.datasets import near_duplicates

    images = _images_in(folder)
    results = near_duplicates.frozen_flags(images, threshold or near_duplicates.FROZEN_THRESHOLD)
    frozen = [r for r in results if r.is_frozen]
    click.echo(json.dumps({
        "frames": len(results),
        "frozen": len(frozen),
        "undecodable": [{"file": r.path, "error": r.error} for r in results if r.error],
        "bytes_in_frozen_frames": sum(Path(r.path).stat().st_size for r in frozen),
        "frozen_frames": [{"file": str(Path(r.path).relative_to(folder)), "repeats": str(Path(r.frozen_of).relative_to(folder)),
                           "reason": r.reason, "score": None if r.score is None else round(r.score, 4)} for r in frozen],
    }, indent=2))


@main.group("bench")
def bench_group() -> None:
    """Benchmarks; each prints its figures as JSON."""


@bench_group.command("cvat")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only output format).")
@click.option("--size-mb", default=20.0, show_default=True, help="Size of the generated mask-heavy export.")
def bench_cvat(as_json: bool, size_mb: float) -> None:
    """Stream a mask-heavy CVAT export: shapes, seconds, shapes/s, peak RSS."""
    from hoban_pipelines.bench import cvat

    click.echo(json.dumps(cvat.run(size_mb=size_mb)))


@bench_group.command("mix")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only output format).")
def bench_mix(as_json: bool) -> None:
    """Assemble a 12,000-entry mix from a 10,000-image base dataset; near-duplicate search over 20,000 thumbnails."""
    from hoban_pipelines.bench import mix

    click.echo(json.dumps(mix.run()))


@bench_group.command("train")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only output format).")
def bench_train(as_json: bool) -> None:
    """One epoch through the base_model asset (Pipes child) against the same ultralytics call run directly."""
    from hoban_pipelines.bench import train

    click.echo(json.dumps(train.run()))


@bench_group.command("all")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only output format).")
def bench_all(as_json: bool) -> None:
    """Every benchmark, one JSON line each: {"cvat": {...}}, {"mix": {...}}, {"train": {...}}."""
    from hoban_pipelines.bench import cvat, mix, train

    for name, bench in (("cvat", cvat), ("mix", mix), ("train", train)):
        click.echo(json.dumps({name: bench.run()}))


if __name__ == "__main__":
    main()
