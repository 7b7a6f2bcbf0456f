"""`imgcls serve`: a real uvicorn server on a loopback port, a real HTTP client, and real headless Chromium."""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import imgcls
from tests.helpers import Server, cli, user_error

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served_run(fmnist_root, tmp_path_factory):
    runs = tmp_path_factory.mktemp("serve_runs")
    outcome = imgcls.train("fashion-mnist", data_root=str(fmnist_root), model="multilayer_cnn", epochs=1,
                           max_per_class=40, workers=0, runs_dir=str(runs), name="served", report=False)
    return outcome.run_dir


@pytest.fixture(scope="module")
def pngs(fmnist_root, tmp_path_factory) -> list[Path]:
    from imgcls.data.builtin import load_builtin

    folder = tmp_path_factory.mktemp("serve_pngs")
    images = load_builtin("fashion-mnist", fmnist_root, train=False)[0][:12]
    for index, image in enumerate(images):
        Image.fromarray(image[0]).save(folder / f"{index:02d}.png")
    return sorted(folder.glob("*.png"))


@pytest.fixture(scope="module")
def server(served_run):
    running = Server(served_run, "--max-upload-mb", "1", "--max-wait-ms", "20")
    yield running
    running.stop()


def test_predictions_equal_imgcls_predict(server, served_run, pngs):
    expected = imgcls.predict(served_run, pngs, topk=10, backend="torch")
    for path, offline in zip(pngs, expected):
        answer = httpx.post(f"{server.url}/predict?topk=10", files={"file": (path.name, path.read_bytes(),
                                                                             "image/png")}, timeout=30)
        assert answer.status_code == 200, answer.text
        served = {guess["class"]: guess["probability"] for guess in answer.json()["predictions"]}
        assert answer.json()["predictions"][0]["class"] == offline["predictions"][0]["class"]
        assert all(abs(served[g["class"]] - g["probability"]) <= 1e-5 for g in offline["predictions"])
    raw = httpx.post(f"{server.url}/predict", content=pngs[0].read_bytes(), headers={"content-type": "image/png"})
    assert raw.status_code == 200 and raw.json()["predictions"][0]["class"] == expected[0]["predictions"][0]["class"]
    batch = httpx.post(f"{server.url}/predict/batch", files=[("files", (p.name, p.read_bytes(), "image/png"))
                                                             for p in pngs[:5]], timeout=30)
    assert [r["predictions"][0]["class"] for r in batch.json()["results"]] == \
        [e["predictions"][0]["class"] for e in expected[:5]]


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buffer, "PNG")  # 144 megapixels in a few hundred KB
    return buffer.getvalue()


def _truncated(path: Path) -> bytes:
    return path.read_bytes()[:300]


def test_bad_requests_get_their_status_and_never_hurt_the_server(server, pngs):
    png = pngs[0].read_bytes()
    cases = [
        ("too large", dict(content=b"\x89PNG" + b"0" * (2 * 2**20), headers={"content-type": "image/png"}), 413),
        ("too large, no length", dict(content=iter([b"0" * 2**19] * 4), headers={"content-type": "image/png"}), 413),
        ("not an image", dict(content=b"%PDF-1.4 not an image", headers={"content-type": "image/png"}), 415),
        ("text content type", dict(content=b"hello", headers={"content-type": "text/plain"}), 415),
        ("an accepted format it is not", dict(files={"file": ("a.gif", _gif(), "image/gif")}), 415),
        ("truncated", dict(content=_truncated(pngs[1]), headers={"content-type": "image/png"}), 400),
        ("empty body", dict(content=b"", headers={"content-type": "image/png"}), 400),
        ("form without a file", dict(data={"note": "hi"}, files={"other": ("x.txt", b"x", "text/plain")}), 400),
        ("bomb", dict(content=_bomb(), headers={"content-type": "image/png"}), 413),
        ("topk 0", dict(params={"topk": 0}, content=png, headers={"content-type": "image/png"}), 400),
    ]
    for name, request, status in cases:
        answer = httpx.post(f"{server.url}/predict", timeout=30, **request)
        assert answer.status_code == status, (name, answer.status_code, answer.text)
        body = answer.json()
        assert set(body) == {"error"} and "Traceback" not in body["error"], name
        assert not re.search(r"/(tmp|root|home|usr|work|opt)/|\.py\b", body["error"]), name  # no server paths
        assert httpx.get(f"{server.url}/health").status_code == 200, name
    assert httpx.post(f"{server.url}/predict", params={"topk": "many"}, content=png,
                      headers={"content-type": "image/png"}).status_code == 422  # FastAPI's validation


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (28, 28)).save(buffer, "GIF")
    return buffer.getvalue()


def test_concurrent_requests_share_forward_passes_and_metrics_say_so(server, pngs):
    import concurrent.futures

    def one(path):
        return httpx.post(f"{server.url}/predict", files={"file": (path.name, path.read_bytes(), "image/png")},
                          timeout=60).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert set(pool.map(one, pngs * 4)) == {200}
    text = httpx.get(f"{server.url}/metrics").text
    assert 'imgcls_requests_total{endpoint="/predict",status="200"}' in text
    assert "imgcls_request_latency_seconds_bucket" in text and "imgcls_queue_depth" in text
    sizes = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
             if line.startswith("imgcls_batch_size_bucket")}
    assert sizes['imgcls_batch_size_bucket{le="1.0"}'] < sizes['imgcls_batch_size_bucket{le="+Inf"}']  # some > 1
    meta = httpx.get(f"{server.url}/metadata").json()
    assert meta["class_names"][0] == "T-shirt/top" and meta["img_size"] == 28 and meta["backend"] == "torch"
    pinned = os.environ.get("IMGCLS_AUTO_PRECISION") or "fp32"  # what auto means for inference on a CPU
    assert meta["precision"] == pinned and meta["model"] == "multilayer_cnn"
    assert httpx.get(f"{server.url}/openapi.json").json()["paths"]["/predict"]


def test_a_token_is_required_when_set_and_for_other_addresses(served_run, pngs):
    assert "--token" in user_error(cli("serve", str(served_run), "--host", "0.0.0.0"))
    guarded = Server(served_run, "--token", "s3cret")
    try:
        files = {"file": ("a.png", pngs[0].read_bytes(), "image/png")}
        assert httpx.post(f"{guarded.url}/predict", files=files).status_code == 401
        assert httpx.post(f"{guarded.url}/predict", files=files,
                          headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(f"{guarded.url}/predict", files=files,
                          headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{guarded.url}/health").status_code == 200 and httpx.get(guarded.url).status_code == 200
    finally:
        guarded.stop()


def test_an_exported_onnx_model_serves_the_same_answers(served_run, pngs):
    assert cli("export", str(served_run)).returncode == 0
    onnx_server = Server(served_run / "model.onnx")
    try:
        expected = imgcls.predict(served_run, pngs[:3], topk=3, backend="torch")
        for path, offline in zip(pngs, expected):
            answer = httpx.post(f"{onnx_server.url}/predict?topk=3",
                                files={"file": (path.name, path.read_bytes(), "image/png")})
            assert answer.json()["predictions"][0]["class"] == offline["predictions"][0]["class"]
        assert httpx.get(f"{onnx_server.url}/metadata").json()["backend"] == "onnxruntime"
    finally:
        onnx_server.stop()
    run_server = Server(served_run)  # the run folder, whose export is now current: onnxruntime answers
    try:
        meta = httpx.get(f"{run_server.url}/metadata").json()
        assert (meta["backend"], meta["precision"], meta["model"]) == ("onnxruntime", "fp32", "multilayer_cnn")
    finally:
        run_server.stop()


CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser")), None)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium); .ci/run installs it")
def test_the_upload_page_in_headless_chromium(server, served_run, pngs, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    expected = imgcls.predict(served_run, [pngs[3]], topk=1, backend="torch")[0]["predictions"][0]["class"]
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url)
        page.wait_for_selector("text=classes, 28 px input")
        page.set_input_files("#files", str(pngs[3]))
        top = page.wait_for_selector(".bar.top", timeout=30_000)
        assert top.get_attribute("data-class") == expected
        shot = Path(os.environ.get("IMGCLS_TEST_ARTIFACTS", tmp_path)) / "upload-page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert not errors and shot.stat().st_size > 10_000
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert (np.abs(pixels - np.array([0x1c, 0x8a, 0x4b])).sum(axis=2) < 30).any()  # the top bar's green
