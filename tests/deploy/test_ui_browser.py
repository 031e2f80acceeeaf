"""What a team member sees, in a real headless Chromium (Debian's, driven by Playwright) against
the team deployment's webserver: the asset graph, one evaluation asset's page with its plots and
one model's report card. The screenshots are saved under the test's temp folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deployment_support import Deployment

MODEL = "base_model"  # the test profile's one-epoch model: its evaluation has every plot, if empty ones
EVALUATION_GROUP = ["model_export", "sliced_predictions", "conf_sweep", "postprocess_sweep", "gate_sweep",
                    "inference_config", "model_report_card"]
PAGE_TIMEOUT_MS = 60_000
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


@pytest.fixture(scope="module")
def evaluated(team_deployment: Deployment) -> Deployment:
    """The model evaluated through the deployment (the UI's evaluation_job for one partition)."""
    deployment = team_deployment
    for assets in (["demo_site"], ["go2k_manual", "go2k_split"], [MODEL]):
        if not all(deployment.materialized(asset) for asset in assets):
            deployment.succeed(assets=assets)
    if not deployment.materialized("model_report_card", MODEL):
        # one process for the whole chain: each step of the default executor would import the code again
        deployment.succeed(job="evaluation_job", partition=MODEL, run_config=IN_PROCESS)
    return deployment


@pytest.fixture
def page(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.fail("no Chromium here: run deploy/test-system-packages.sh (`make test` does) or install Debian's "
                    "chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # root has no user namespace sandbox for Chromium here; the page is our own loopback server
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        yield page
        browser.close()


def _shoot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} is nearly empty"
    return path


def _embedded_plot(page, tmp_path: Path) -> dict:
    """Open a metadata entry's markdown and return its first image's data-URL prefix and size,
    once the browser has decoded it (pictures are embedded as JPEG previews)."""
    page.get_by_text("[Show Markdown]").first.click()
    image = page.locator('img[src^="data:image/"]').first
    try:
        image.wait_for(state="visible")
    except Exception:
        (tmp_path / "no_picture.html").write_text(page.content())  # what the page held instead
        raise
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    return image.evaluate("img => ({src: img.src.slice(0, 23), width: img.naturalWidth, height: img.naturalHeight})")


def test_the_asset_graph_shows_every_group_and_the_evaluation_assets(evaluated, page, tmp_path):
    page.goto(f"{evaluated.url}/asset-groups")
    page.get_by_text("Global asset lineage").wait_for()
    for group in ("inputs", "datasets", "models", "evaluation", "captures", "review", "retraining"):
        page.get_by_text(group, exact=True).first.wait_for()
    _shoot(page, tmp_path, "asset_graph")

    page.goto(f"{evaluated.url}/locations/hoban_pipelines/asset-groups/evaluation/lineage")
    for asset in EVALUATION_GROUP:
        page.get_by_text(asset, exact=True).first.wait_for()
    _shoot(page, tmp_path, "evaluation_group")


def test_an_evaluation_page_shows_its_numbers_and_its_plots(evaluated, page, tmp_path):
    page.goto(f"{evaluated.url}/assets/gate_sweep?partition={MODEL}")
    page.get_by_text("Latest materialization").wait_for()
    body = page.inner_text("body")
    for expected in ("gate_sweep", "count/configurations", "without_gate", "recall_by_size", "heatmap", MODEL):
        assert expected in body, f"{expected!r} not on the gate_sweep page"
    _shoot(page, tmp_path, "gate_sweep")
    plot = _embedded_plot(page, tmp_path)
    assert plot["src"] == "data:image/jpeg;base64," and plot["width"] > 100 and plot["height"] > 100, plot
    _shoot(page, tmp_path, "gate_sweep_plot")


def test_a_models_report_card_shows_scores_per_class_and_its_pictures(evaluated, page, tmp_path):
    page.goto(f"{evaluated.url}/assets/model_report_card?partition={MODEL}")
    page.get_by_text("Latest materialization").wait_for()
    body = page.inner_text("body")
    for expected in ("model_report_card", "precision", "recall", "f1", "per_class", "person_with_helmet",
                     "person_without_helmet", "without gate"):
        assert expected in body, f"{expected!r} not on the report card"
    _shoot(page, tmp_path, "model_report_card")
    plot = _embedded_plot(page, tmp_path)
    assert plot["src"] == "data:image/jpeg;base64," and plot["width"] > 100, plot
    _shoot(page, tmp_path, "model_report_card_plot")
