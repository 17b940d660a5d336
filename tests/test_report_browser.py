"""The HTML report as a reader opens it (issue 31): in headless Chromium every figure of the report
renders (each <img> decoded, none broken), and the sweep's parent run in MLflow holds the same files
as the report directory."""

from pathlib import Path

from browser import browser_page  # noqa: F401 - a fixture
from mlflow.tracking import MlflowClient
from test_report import REPS, build_store

from lamo_ray.report import generate_report


def test_every_figure_renders_in_a_browser_and_mlflow_holds_the_same_files(tmp_path, browser_page):
    uri, parent = build_store(tmp_path)
    rep = generate_report(uri, "rep", tmp_path / "out", reps=REPS)
    page = browser_page
    page.goto((tmp_path / "out" / "report.html").as_uri())
    images = page.locator("figure img")
    assert images.count() == len(rep.figures) == 3
    for i in range(images.count()):
        img = images.nth(i)
        img.scroll_into_view_if_needed()
        size = img.evaluate("e => [e.complete, e.naturalWidth, e.naturalHeight]")
        assert size[0] and size[1] > 300 and size[2] > 200, (img.get_attribute("alt"), size)
    captions = page.locator("figcaption").all_inner_texts()
    assert captions == ["Final score vs sample ratio", "Learning curves (offline trials)", "ASHA: steps run per trial"]
    assert page.locator("h1").inner_text() == "Sweep report: rep"
    logged = {Path(a.path).name for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert logged == {p.name for p in (tmp_path / "out").iterdir()}
