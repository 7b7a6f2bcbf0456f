"""The serving rows of the fault matrix (reliability.md): T28 upload limits, T29 content checks, T30 the bounded
queue under overload, S4 server exposure, S5 untrusted images, and the upload fuzz of S3.

Rows about the HTTP layer run the real app (`create_app`) in a real uvicorn server on 127.0.0.1, in this process,
over a stand-in classifier (its class is the image's brightness band; it can be made slow). The rows that promise
`imgcls.predict`'s answers, and the bind checks of `imgcls serve`, use a tiny trained run and are marked slow.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import io
import pkgutil
import re
import socket
import struct
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image, ImageFile

import imgcls
from imgcls.serving.app import ServeSettings, create_app
from tests.helpers import cli, fashion_mnist_arrays, free_port, user_error

MB = 2**20
STATUSES_OF_A_BAD_REQUEST = {400, 408, 413, 415, 422}


class StandIn:
    """A classifier for the HTTP rows: class i is the i-th band of mean brightness; sleeps `delay_s` per batch."""

    class_names = ["dark", "dim", "light", "bright"]
    img_size, in_chans, interpolation = 16, 1, "bilinear"

    def __init__(self, delay_s: float = 0.0, failure: str | None = None):
        self.delay_s, self.failure = delay_s, failure

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        if self.failure:
            raise RuntimeError(self.failure)
        bands = np.clip(images.reshape(len(images), -1).mean(axis=1) // 64, 0, 3).astype(int)
        probabilities = np.full((len(images), 4), 0.1)
        probabilities[np.arange(len(images)), bands] = 0.7
        return probabilities


@contextmanager
def serving(app) -> Iterator[str]:
    """`app` in a uvicorn server on a free loopback port, in a thread of this process; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def stand_in_app(classifier: StandIn | None = None, **settings):
    return create_app(classifier or StandIn(), ServeSettings(**settings),
                      {"model": "stand-in", "imgcls_version": imgcls.__version__})


@pytest.fixture(scope="module")
def stand_in() -> Iterator[str]:
    """The stand-in server most rows share: a 1 MB upload limit (the default is 10), 5 s per request."""
    with serving(stand_in_app(max_upload_mb=1, timeout_s=5)) as url:
        yield url


def encoded(array: np.ndarray, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, image_format, **options)
    return buffer.getvalue()


def grey(level: int, side: int = 24) -> np.ndarray:
    return np.full((side, side), level, np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels (a decompression bomb, as a decoder meets it)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(bytes(width * 4)))
            + png_chunk(b"IEND", b""))


def psd(side: int = 8) -> bytes:
    """A valid 8-bit greyscale Photoshop file (Pillow reads PSD but cannot write it)."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 1, side, side, 8, 1)
    return header + struct.pack(">IIIH", 0, 0, 0, 0) + bytes(range(side * side))


def assert_json_error(answer: httpx.Response, status: int) -> str:
    """The answer is `status` with a body of one JSON field, "error": one line, no trace and no server path."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"], body
    assert "Traceback" not in body["error"] and not re.search(r"/(tmp|root|home|usr|work|opt|srv)/|\.py\b",
                                                              body["error"]), body
    return body["error"]


def post_image(url: str, data: bytes, content_type: str | None = "image/png", **options) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return httpx.post(f"{url}/predict", content=data, headers={**headers, **options.pop("headers", {})},
                      timeout=30, **options)


def raw_exchange(url: str, head: str, parts: list[bytes], pause_s: float = 0.0, wait_s: float = 5.0
                 ) -> tuple[int, int, float]:
    """Send `head` and then `parts` on a socket, `pause_s` apart, stopping as soon as the server answers; returns
    (status, how many parts were sent, seconds until the answer)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as connection:
        started, sent = time.monotonic(), 0
        connection.sendall(head.encode("latin-1"))
        answer = b""
        for part in parts:
            connection.settimeout(pause_s or 0.001)
            try:
                answer = connection.recv(4096)
                break
            except TimeoutError:
                try:
                    connection.sendall(part)
                except OSError:  # the server closed its side: its answer is waiting to be read
                    break
                sent += 1
        connection.settimeout(wait_s)
        answer = answer or connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12]), sent, time.monotonic() - started


def peak_rss_kib() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


@contextmanager
def peak_rss_growth() -> Iterator[list[float]]:
    """Yields a list that holds, once the block ends, how many MB this process's peak RSS rose during it."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before, growth = peak_rss_kib(), []
    yield growth
    growth.append((peak_rss_kib() - before) / 1024)


# --- T28: upload limits -----------------------------------------------------------------------------------------


def test_t28_upload_over_the_configured_limit_is_413_and_under_it_is_served(stand_in):
    noise = np.random.default_rng(0).integers(0, 256, (800, 800), dtype=np.uint8)
    under, over = encoded(noise, "PNG"), encoded(np.tile(noise, (2, 1)), "PNG")
    assert 0.5 * MB < len(under) < MB < len(over) < 2 * MB
    with httpx.Client(timeout=30) as client:  # an answered body keeps the connection; a refused one closes it
        served = client.post(f"{stand_in}/predict", content=under, headers={"content-type": "image/png"})
        health = client.get(f"{stand_in}/health")
    assert served.status_code == 200 and health.status_code == 200
    assert "connection" not in served.headers and "connection" not in health.headers
    message = assert_json_error(post_image(stand_in, over), 413)
    assert "1 MB" in message and "--max-upload-mb" in message
    form = httpx.post(f"{stand_in}/predict", files={"file": ("big.png", over, "image/png")}, timeout=30)
    assert_json_error(form, 413)
    assert httpx.get(f"{stand_in}/health").json()["status"] == "ok"


def test_t28_a_declared_or_chunked_body_over_the_limit_is_refused_before_it_is_all_sent(stand_in):
    megabyte = b"\0" * MB
    declared = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 10737418240\r\n\r\n"
    status, sent, _ = raw_exchange(stand_in, declared, [megabyte] * 10_000, pause_s=0.5)
    assert status == 413 and sent < 20  # 10 GB announced; the answer came after the headers and a few MB at most
    chunked = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = f"{len(megabyte):x}\r\n".encode() + megabyte + b"\r\n"
    status, sent, _ = raw_exchange(stand_in, chunked, [chunk] * 10_000, pause_s=0.2)
    assert status == 413 and 1 <= sent < 20  # no length and no final chunk: refused once past 1 MB


def test_t28_a_huge_streamed_body_gets_413_and_the_server_memory_stays_flat(stand_in):
    chunk, total_chunks, yielded = b"\xff" * MB, 256, [0]

    def body():
        for _ in range(total_chunks):
            yielded[0] += 1
            yield chunk

    with peak_rss_growth() as growth:
        answer = httpx.post(f"{stand_in}/predict", content=body(), headers={"content-type": "image/png"}, timeout=60)
    assert_json_error(answer, 413)
    assert answer.headers["connection"] == "close"  # so the server stops reading it
    assert yielded[0] < total_chunks / 2  # the server stopped reading long before the 256 MB were sent
    assert growth[0] < 48, f"peak RSS rose {growth[0]:.0f} MB while a 256 MB body was refused"
    assert httpx.get(f"{stand_in}/health").status_code == 200


def test_t28_a_body_that_trickles_in_is_cut_off_with_408():
    with serving(stand_in_app(timeout_s=0.5)) as url:
        head = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100\r\n\r\n"
        status, sent, seconds = raw_exchange(url, head, [b"\x89"] * 100, pause_s=0.15)
        assert status == 408 and sent < 10 and seconds < 2.0  # each byte came in time; the body as a whole did not
        assert httpx.get(f"{url}/health").status_code == 200


# --- T29: content checks -----------------------------------------------------------------------------------------


def test_t29_bad_content_gets_its_4xx_json_error_and_the_server_stays_healthy(stand_in):
    png = encoded(np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8), "PNG")
    cases = [
        ("text content type", dict(data=png, content_type="text/plain"), 415),
        ("json content type", dict(data=b'{"image": "x"}', content_type="application/json"), 415),
        ("no content type, not an image", dict(data=b"\x00\x01 not an image", content_type=None), 415),
        ("HTML saved as .png", dict(data=b"<!doctype html><html><body>hi</body></html>"), 415),
        ("empty body", dict(data=b""), 400),
        ("truncated PNG", dict(data=png[: len(png) // 2]), 400),
        ("bomb over Pillow's own limit", dict(data=png_claiming(20_000, 20_000)), 413),
        ("bomb over the server's limit", dict(data=png_claiming(8_000, 8_000)), 413),
        ("topk is not a number", dict(data=png, params={"topk": "many"}), 422),
        ("topk 0", dict(data=png, params={"topk": 0}), 400),
    ]
    for name, request, status in cases:
        answer = post_image(stand_in, **request)
        if status == 422:  # FastAPI's validation answer: JSON, no trace
            assert answer.status_code == 422 and "Traceback" not in answer.text, name
        else:
            assert_json_error(answer, status)
        assert httpx.get(f"{stand_in}/health", timeout=5).json()["status"] == "ok", name
    text_file = {"other": ("x.txt", b"x", "text/plain")}
    forms = [({"note": "hi"}, text_file), ({"file": "a text field, not a file"}, text_file)]
    for data, files in forms:
        assert "'file'" in assert_json_error(httpx.post(f"{stand_in}/predict", data=data, files=files), 400)
    broken_form = httpx.post(f"{stand_in}/predict", content=b"--nope\r\n\r\nxx",
                             headers={"content-type": "multipart/form-data; boundary=other"})
    assert_json_error(broken_form, 400)


def test_t29_without_a_content_type_the_bytes_decide_as_rfc_9110_allows(stand_in):
    answer = post_image(stand_in, encoded(grey(250), "PNG"), content_type=None)  # read as application/octet-stream
    assert answer.status_code == 200 and answer.json()["decision"] == "bright"
    jpeg_labelled_png = post_image(stand_in, encoded(grey(10), "JPEG"), content_type="image/png")
    assert jpeg_labelled_png.status_code == 200 and jpeg_labelled_png.json()["decision"] == "dark"


# --- T30: overload ------------------------------------------------------------------------------------------------


def test_t30_overload_is_refused_with_503_and_retry_after_and_health_stays_quick():
    slow = StandIn(delay_s=0.3)
    levels = [10, 80, 150, 230] * 6  # 24 requests at once: 4x what the batch (2) and the queue (4) hold
    images = {level: encoded(grey(level), "PNG") for level in set(levels)}
    health = []  # (seconds, queue depth) of each /health call during the overload
    with serving(stand_in_app(slow, max_batch=2, max_queue=4, max_wait_ms=1, timeout_s=5)) as url:
        with concurrent.futures.ThreadPoolExecutor(len(levels)) as pool:
            pending = [pool.submit(post_image, url, images[level]) for level in levels]
            while not all(answer.done() for answer in pending) and len(health) < 100:
                started = time.monotonic()
                depth = httpx.get(f"{url}/health", timeout=5).json()["queue_depth"]
                health.append((time.monotonic() - started, depth))
                time.sleep(0.02)
            answers = [answer.result() for answer in pending]
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {200, 503} and statuses.count(503) >= 6 and statuses.count(200) >= 4, statuses
    for level, answer in zip(levels, answers):
        if answer.status_code == 503:
            assert answer.headers["retry-after"] == "1" and "capacity" in assert_json_error(answer, 503)
        else:
            assert answer.json()["decision"] == StandIn.class_names[level // 64]
    assert max(depth for _, depth in health) == 4  # the queue filled up to its bound, never past it
    latencies = sorted(seconds for seconds, _ in health)  # against the 0.3 s of each batch the accepted ones wait
    assert latencies[len(latencies) // 2] < 0.3 and latencies[-1] < 0.9, latencies


def test_t30_a_request_past_the_per_request_timeout_gets_504():
    with serving(stand_in_app(StandIn(delay_s=2.0), timeout_s=0.5)) as url:
        started = time.monotonic()
        message = assert_json_error(post_image(url, encoded(grey(100), "PNG")), 504)
        assert "0.5 s (--timeout-s)" in message and time.monotonic() - started < 1.5  # not the model's 2 s
        assert httpx.get(f"{url}/health", timeout=1).status_code == 200


# --- S4: server exposure ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "myhost.example"])
def test_s4_a_non_loopback_bind_without_a_token_is_refused_in_one_line(host):
    line = user_error(cli("serve", "runs/absent", "--host", host))
    assert f"--host {host}" in line and "--token" in line and "--insecure" in line


def test_s4_no_cors_and_no_endpoint_takes_a_model_path_or_url(stand_in):
    preflight = httpx.options(f"{stand_in}/predict", headers={"origin": "https://evil.example",
                                                               "access-control-request-method": "POST"})
    simple = post_image(stand_in, encoded(grey(40), "PNG"), headers={"origin": "https://evil.example"})
    assert simple.status_code == 200 and preflight.status_code == 405
    assert not any(key.startswith("access-control-") for key in [*simple.headers, *preflight.headers])
    schema = httpx.get(f"{stand_in}/openapi.json").json()
    parameters = {parameter["name"] for path in schema["paths"].values() for operation in path.values()
                  for parameter in operation.get("parameters", [])}
    assert parameters == {"topk"}
    with socket.socket() as canary:  # where a request tries to send the server: nothing may connect to it
        canary.bind(("127.0.0.1", 0))
        canary.listen()
        canary.settimeout(0.3)
        target = f"http://127.0.0.1:{canary.getsockname()[1]}/model.onnx"
        for field in ("model", "url", "weights", "path"):
            post_image(stand_in, encoded(grey(40), "PNG"), params={field: target})
            httpx.post(f"{stand_in}/predict", data={field: target}, files={"file": ("a.png", b"x", "image/png")})
            httpx.post(f"{stand_in}/predict", json={field: target, "url": target})
        with pytest.raises(TimeoutError):
            canary.accept()


def test_s4_error_bodies_carry_no_trace_and_no_path():
    failing = StandIn(failure="cannot read /srv/models/secret/weights.safetensors (model.py line 3)")
    with serving(stand_in_app(failing)) as url:
        message = assert_json_error(post_image(url, encoded(grey(40), "PNG")), 500)
        assert "secret" not in message
        for answer in (httpx.get(f"{url}/no/such/route"), httpx.delete(f"{url}/predict"),
                       httpx.post(f"{url}/predict?topk=x", content=b"x")):
            assert 400 <= answer.status_code < 500 and "Traceback" not in answer.text
            assert not re.search(r"/(tmp|root|home|usr|work|opt|srv)/|\.py\b", answer.text), answer.text


# --- S5: untrusted images ------------------------------------------------------------------------------------------


def test_s5_only_jpeg_png_webp_and_bmp_are_decoded(stand_in):
    others = {"GIF": encoded(grey(90), "GIF"), "TIFF": encoded(grey(90), "TIFF"), "PSD": psd(),
              "ICO": encoded(grey(90), "ICO"), "PPM": encoded(grey(90), "PPM")}
    for name, data in others.items():
        assert Image.open(io.BytesIO(data)).format == name  # a real image Pillow could decode...
        assert "JPEG, PNG, WEBP, BMP" in assert_json_error(post_image(stand_in, data), 415), name  # ...refused
    for name in ("JPEG", "PNG", "WEBP", "BMP"):
        answer = post_image(stand_in, encoded(grey(90), name), content_type=f"image/{name.lower()}")
        assert answer.status_code == 200 and answer.json()["decision"] == "dim", name


def test_s5_a_truncated_upload_is_refused_and_truncated_loading_stays_off(stand_in):
    jpeg = encoded(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8), "JPEG")
    for cut in (len(jpeg) // 3, len(jpeg) - 40):
        assert "truncated" in assert_json_error(post_image(stand_in, jpeg[:cut], "image/jpeg"), 400)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_s5_an_uploaded_file_name_is_never_a_path(stand_in, tmp_path, monkeypatch):
    working = tmp_path / "a" / "b"
    working.mkdir(parents=True)
    monkeypatch.chdir(working)  # the server's working folder: "../../" leads to tmp_path
    names = ["../../escaped.png", "/tmp/imgcls-s5-escaped.png", "..\\..\\escaped.png"]
    png = encoded(grey(200), "PNG")
    single = httpx.post(f"{stand_in}/predict", files={"file": (names[0], png, "image/png")})
    batch = httpx.post(f"{stand_in}/predict/batch", files=[("files", (name, png, "image/png")) for name in names])
    assert single.status_code == 200 and batch.status_code == 200
    assert [result["file"] for result in batch.json()["results"]] == ["escaped.png", "imgcls-s5-escaped.png",
                                                                      "..\\..\\escaped.png"]
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == ["a", "a/b"]
    assert not Path("/tmp/imgcls-s5-escaped.png").exists()


# --- S3, uploads: fuzz ---------------------------------------------------------------------------------------------


def fuzzed_uploads(seed: int = 31) -> list[bytes]:
    """150 uploads: 30 random byte strings, and 30 truncations and 30 single-bit flips of each of two real images,
    a Fashion-MNIST PNG and a photo (scikit-image's chelsea) as JPEG."""
    from skimage import data  # noqa: PLC0415 (scikit-image is slow to import; only this test needs it)

    rng = np.random.default_rng(seed)
    originals = [encoded(fashion_mnist_arrays("test")[0][0], "PNG"), encoded(data.chelsea(), "JPEG", quality=90)]
    uploads = [rng.bytes(int(rng.integers(0, 4096))) for _ in range(30)]
    for original in originals:
        uploads += [original[:cut] for cut in rng.integers(0, len(original), 30)]
        for bit in rng.integers(0, len(original) * 8, 30):
            flipped = bytearray(original)
            flipped[bit // 8] ^= 1 << (bit % 8)
            uploads.append(bytes(flipped))
    return uploads


def test_s3_fuzzed_uploads_get_200_or_a_4xx_json_error_never_500_and_memory_stays_bounded(stand_in):
    uploads = fuzzed_uploads()
    assert len(uploads) == 150
    statuses = []
    with peak_rss_growth() as growth, httpx.Client(timeout=30) as client:
        for data in uploads:
            answer = client.post(f"{stand_in}/predict", content=data, headers={"content-type": "image/png"})
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                assert answer.json()["decision"] in StandIn.class_names
            else:
                assert answer.status_code in STATUSES_OF_A_BAD_REQUEST, (answer.status_code, answer.text)
                assert_json_error(answer, answer.status_code)
    assert 200 in statuses and 400 in statuses and 415 in statuses
    assert growth[0] < 64, f"peak RSS rose {growth[0]:.0f} MB over 150 uploads of at most a few KB"
    assert httpx.get(f"{stand_in}/health").json()["status"] == "ok"


# --- the rows that need a trained model (slow) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_run(fmnist_root, tmp_path_factory) -> Path:
    outcome = imgcls.train("fashion-mnist", data_root=str(fmnist_root), model="multilayer_cnn", epochs=1,
                           max_per_class=40, workers=0, runs_dir=str(tmp_path_factory.mktemp("runs")),
                           name="served", report=False)
    return outcome.run_dir


def serve_command(monkeypatch, *args: str) -> tuple[int, dict]:
    """Run `imgcls serve ARGS` up to the point where it would start uvicorn; returns the exit code and what it
    would have run ({"app", "host", "port", ...}), so no test binds a non-loopback address."""
    started: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.update(app=app, **options))
    return cli("serve", *args).returncode, started


@pytest.mark.slow
def test_s4_serve_binds_loopback_by_default_and_other_addresses_only_when_asked(served_run, monkeypatch):
    code, started = serve_command(monkeypatch, str(served_run))
    assert code == 0 and started["host"] == "127.0.0.1"
    code, started = serve_command(monkeypatch, str(served_run), "--host", "0.0.0.0", "--insecure")
    assert code == 0 and started["host"] == "0.0.0.0"
    code, started = serve_command(monkeypatch, str(served_run), "--host", "0.0.0.0", "--token", "s3cret")
    assert code == 0 and started["host"] == "0.0.0.0"
    with serving(started["app"]) as url:  # the app it would have served demands the token
        png = encoded(grey(90, 28), "PNG")
        assert post_image(url, png).status_code == 401
        assert post_image(url, png, headers={"authorization": "Bearer s3cret"}).status_code == 200


def odd_uploads(folder: Path) -> list[Path]:
    """A real Fashion-MNIST image as CMYK JPEG, 16-bit PNG, EXIF-rotated JPEGs, palette + transparency, LA."""
    image = Image.fromarray(fashion_mnist_arrays("test")[0][3])
    rotated = image.transpose(Image.Transpose.ROTATE_90)
    files = {"cmyk.jpg": (image.convert("CMYK"), {}),
             "16bit.png": (Image.fromarray(np.asarray(image).astype(np.uint16) * 257), {}),
             "palette.png": (image.convert("P"), {"transparency": 0}), "la.png": (image.convert("LA"), {})}
    for orientation in (6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        files[f"exif{orientation}.jpg"] = (rotated if orientation == 6 else rotated.rotate(180), {"exif": exif})
    for name, (picture, options) in files.items():
        picture.save(folder / name, **options)
    return [folder / name for name in files]


@pytest.mark.slow
def test_t29_odd_mode_uploads_are_answered_as_imgcls_predict_answers(served_run, monkeypatch, tmp_path):
    files = odd_uploads(tmp_path)
    expected = imgcls.predict(served_run, files, topk=10)
    assert [result["path"] for result in expected] == [str(path) for path in files]
    _, started = serve_command(monkeypatch, str(served_run))
    with serving(started["app"]) as url:
        for path, offline in zip(files, expected):
            raw = post_image(url, path.read_bytes(), "application/octet-stream", params={"topk": 10})
            form = httpx.post(f"{url}/predict?topk=10", files={"file": (path.name, path.read_bytes())}, timeout=30)
            for answer in (raw, form):
                assert answer.status_code == 200, (path.name, answer.text)
                served = {guess["class"]: guess["probability"] for guess in answer.json()["predictions"]}
                assert answer.json()["decision"] == offline["decision"], path.name
                assert all(abs(served[guess["class"]] - guess["probability"]) < 1e-5
                           for guess in offline["predictions"]), path.name


@pytest.mark.slow
def test_s5_every_imgcls_module_leaves_pillow_guarded():
    imported = [module.name for module in pkgutil.walk_packages(imgcls.__path__, "imgcls.")
                if not module.name.endswith("__main__")]  # __main__ runs the CLI
    for name in imported:
        importlib.import_module(name)
    assert len(imported) > 50
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS <= 2**28
    assert ServeSettings().max_pixels <= Image.MAX_IMAGE_PIXELS  # the server's own, lower limit applies first
