"""report.html, `imgcls report`, `imgcls compare` and `imgcls data show` on real Fashion-MNIST runs."""

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import cli

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


@pytest.fixture(scope="module")
def two_runs(fmnist_root, tmp_path_factory):
    """A LeNet and a small ViT, one epoch each on 30 images per class of real Fashion-MNIST."""
    import imgcls

    runs = tmp_path_factory.mktemp("report_runs")
    common = dict(data_root=str(fmnist_root), epochs=1, max_per_class=30, workers=0, runs_dir=str(runs))
    imgcls.train("fashion-mnist", model="lenet", img_size=32, name="lenet", **common)
    imgcls.train("fashion-mnist", model="vit", name="vit", options={"patch_size": 7, "width": 32, "depth": 1,
                                                                    "heads": 2}, **common)
    return runs / "lenet", runs / "vit"


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images, self.urls = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.urls.append(value)
            if tag == "img" and name == "src":
                self.images.append(value)


def _parse(path: Path) -> _Elements:
    parser = _Elements()
    parser.feed(path.read_text())
    return parser


def test_a_run_writes_every_figure_and_a_self_contained_report(two_runs):
    lenet, vit = two_runs
    plots = {path.name for path in (lenet / "plots").glob("*.png")}
    for split in ("train", "val", "test"):
        assert {f"roc_{split}.png", f"pr_{split}.png", f"reliability_{split}.png", f"confusion_{split}.png"} <= plots
    assert {"mistakes_val.png", "mistakes_test.png", "samples.png", "filters.png", "filter_responses.png",
            "loss.png", "accuracy.png", "looked_at_test_mistakes.png", "looked_at_test_correct.png"} <= plots
    assert "What the model looked at" in (lenet / "report.html").read_text()
    assert "patches.png" not in plots and (vit / "plots" / "patches.png").is_file()  # the ViT's patch grid
    assert (lenet / "predictions" / "test.npz").is_file() and (lenet / "predictions" / "test_mistakes.csv").is_file()
    summary = json.loads((lenet / "run.json").read_text())
    assert summary["parameters"] == 59_086 and summary["epochs_run"] == 1 and summary["hardware"]["cpu_cores"] >= 1

    page = _parse(lenet / "report.html")
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)  # nothing to run or fetch
    assert all(url.startswith("data:image/png;base64,") for url in page.urls)
    assert len(page.images) == len(plots)  # every figure of plots/ is in the page
    for src in page.images:
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as image:
            assert image.format == "PNG"
    text = (lenet / "report.html").read_text()
    metrics = json.loads((lenet / "metrics.json").read_text())
    low, high = metrics["test"]["accuracy"]["ci95"]
    assert f"{metrics['test']['accuracy']['value']:.4f}" in text and f"[{low:.4f}, {high:.4f}]" in text
    for expected in ("Ankle boot", "lenet", "59,086", "sensitivity (recall)", "cores", "config.yaml of this run",
                     "global_batch_size", "the adamw default, not scaled by the batch size"):
        assert expected.lower() in text.lower(), expected
    assert "<td>img_size</td><td>32 (asked for)</td>" in text  # the plan, with why each value was chosen


def test_the_report_says_where_its_maps_come_from_and_warns_when_they_are_coarse(two_runs, fmnist_root, tmp_path):
    """The 28-px Fashion-MNIST recipe's maps come from a 7x7 layer (its last map is 3x3); a ViT with 7-px patches
    at 28 px has a 4x4 grid, and its report says not to read those maps as evidence, and why."""
    import imgcls

    recipe = imgcls.train("fashion-mnist", recipe="fashion-mnist", data_root=str(fmnist_root), epochs=1,
                          max_per_class=30, workers=0, runs_dir=str(tmp_path), name="recipe")
    looked = json.loads((recipe.run_dir / "looked_at.json").read_text())
    assert looked["source"].endswith(("(7x7)", "(14x14)")) and 1 <= looked["scored_images"] <= 16
    text = (recipe.run_dir / "report.html").read_text()
    assert f"Maps: {looked['source']}" in text and f"{looked['faithfulness']:.2f}" in text
    choice = looked["choice"]  # auto: the CAM most faithful on the val split (engine/map_choice)
    assert list(choice["scores"]) == [f"{method} at {layer}" for layer in ("features.17", "features.10")
                                      for method in ("gradcam", "hirescam", "layercam")] and choice["split"] == "val"
    assert looked["source"].startswith(f"{choice['method']} at {choice['layer']} (")
    assert looked["chosen_because"] in text
    image = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)).save(image)
    again = imgcls.explain(recipe.run_dir, [image], out=tmp_path / "explained")  # the report's choice, reused
    assert (again[0]["method"], again[0]["layer"]) == (choice["method"], choice["layer"])
    assert again[0]["chosen_because"].endswith("in the run's report")
    _, vit = two_runs
    warning = json.loads((vit / "looked_at.json").read_text())["warning"]
    assert "the map is 4x4" in warning and "smaller patches" in warning
    assert "Do not read these maps as evidence: the map is 4x4" in (vit / "report.html").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium); "
                                             ".ci/run installs it")
@pytest.mark.slow
def test_report_renders_in_headless_chromium_without_network_or_console_errors(two_runs, tmp_path):
    lenet, _ = two_runs
    report = lenet / "report.html"
    shot = tmp_path / "report.png"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shown = subprocess.run([*flags, "--window-size=1280,16000", f"--screenshot={shot}", report.as_uri()],
                           capture_output=True, text=True, timeout=120)
    assert shot.is_file(), shown.stderr[-2000:]
    console = [line for line in shown.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console

    # A test-only copy of the page writes into its title how many images decoded and how many resources the
    # page fetched (Resource Timing lists every fetch; data: URIs are not fetches).
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", "<script>window.onload = () => { document.title = "
                                                "[[...document.images].filter(i => i.complete && i.naturalWidth > 0)"
                                                ".length, document.images.length, performance.getEntriesByType("
                                                "'resource').length].join('/'); };</script></body>"))
    dom = subprocess.run([*flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    loaded, total, fetched = dom.split("<title>", 1)[1].split("</title>", 1)[0].split("/")
    assert loaded == total and int(total) == len(list((lenet / "plots").glob("*.png")))
    assert fetched == "0"

    # The screenshot shows the figures: the confusion matrices' dark blue and the curves' colours are drawn.
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    dark_blue = (np.abs(pixels - [8, 48, 107]).sum(-1) < 40).sum()
    orange = (np.abs(pixels - [255, 127, 14]).sum(-1) < 40).sum()  # matplotlib's second colour (val curves)
    assert dark_blue > 500 and orange > 50, (dark_blue, orange)
    assert (pixels.sum(-1) < 600).mean() > 0.05  # a page of content, not a blank one


@pytest.mark.slow
def test_report_command_redraws_the_figures_and_the_page(two_runs):
    lenet, _ = two_runs
    (lenet / "plots" / "roc_val.png").unlink()
    (lenet / "report.html").unlink()
    result = cli("report", str(lenet))
    assert result.returncode == 0, result.stderr
    assert (lenet / "plots" / "roc_val.png").is_file() and (lenet / "report.html").is_file()
    assert (lenet / "plots" / "mistakes_val.png").is_file()  # image figures are kept as training wrote them
    missing = cli("report", str(lenet.parent / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and len(missing.stderr.splitlines()) == 1


def test_compare_prints_both_runs_and_writes_a_page(two_runs, tmp_path):
    lenet, vit = two_runs
    out = tmp_path / "compare.html"
    result = cli("compare", str(lenet), str(vit), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "lenet" in result.stdout and "vit" in result.stdout and "ROC-AUC" in result.stdout
    accuracy = json.loads((vit / "metrics.json").read_text())["test"]["accuracy"]
    assert f"{accuracy['value']:.4f} [{accuracy['ci95'][0]:.4f}, {accuracy['ci95'][1]:.4f}]" in result.stdout
    page = _parse(out)
    assert len(page.images) == 1 and "script" not in page.tags  # the overlaid validation curves
    again = cli("compare", str(lenet), str(vit), "--out", str(out))  # our own page may be replaced
    assert again.returncode == 0, again.stderr
    foreign = tmp_path / "notes.html"
    foreign.write_text("<p>my notes</p>")
    refused = cli("compare", str(lenet), str(vit), "--out", str(foreign))
    assert refused.returncode == 2 and "not written by imgcls" in refused.stderr
    assert foreign.read_text() == "<p>my notes</p>"
    alone = cli("compare", str(lenet))
    assert alone.returncode == 2 and "at least two" in alone.stderr


def test_data_show_writes_a_sample_grid(fmnist_root, class_folders, tmp_path):
    out = tmp_path / "fmnist.png"
    result = cli("data", "show", "fashion-mnist", "--data-root", str(fmnist_root), "--out", str(out),
                     "--per-class", "4")
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        assert image.info.get("Software") == "imgcls" and image.size[1] > 800  # ten rows of four
    folder = cli("data", "show", str(class_folders), "--split", "val", cwd=tmp_path)
    assert folder.returncode == 0, folder.stderr
    assert (tmp_path / "photos-samples.png").is_file()
    wrong = cli("data", "show", str(class_folders), "--split", "test", cwd=tmp_path)
    assert wrong.returncode == 2 and "no 'test' split" in wrong.stderr
