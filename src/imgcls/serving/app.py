"""The HTTP API: FastAPI routes over a classifier (a run's model or an exported ONNX file), with dynamic
batching, upload limits, an optional bearer token, Prometheus metrics and an upload page.

(No `from __future__ import annotations` here: FastAPI reads the route signatures' types at run time.)"""

import asyncio
import io
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import UnidentifiedImageError
from starlette.exceptions import HTTPException

from imgcls.data.images import DECODE_ERRORS, ImageTooLarge, decode_image
from imgcls.engine.ranking import DecisionRule, top_classes
from imgcls.serving.batching import DynamicBatcher, Overloaded
from imgcls.serving.guards import BodyRefused, RequestGuard
from imgcls.serving.telemetry import Telemetry

ALLOWED_FORMATS = ["JPEG", "PNG", "WEBP", "BMP"]  # decoders a request may reach (Pillow's allow-list)


@dataclass(frozen=True)
class ServeSettings:
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_upload_mb: float = 10.0
    max_pixels: int = 40_000_000  # a larger image is a decompression bomb here: 413 before decoding
    timeout_s: float = 30.0
    token: str | None = None
    topk: int = 5


class ServedClassifier(Protocol):
    """What is served (the predict workflow's Classifier): uint8 image batches in, probabilities out."""

    class_names: list[str]
    img_size: int
    in_chans: int
    interpolation: str

    def probabilities(self, images: np.ndarray) -> np.ndarray: ...


class RequestError(Exception):
    """A bad request, answered with `status` and a one-line message (never a trace or a server path)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def decode_upload(data: bytes, classifier: ServedClassifier, max_pixels: int) -> np.ndarray:
    """The uploaded bytes as the model's input, or a RequestError: 400 empty/broken, 413 bomb, 415 not an image."""
    if not data:
        raise RequestError(400, "the request has no image: send its bytes, or a multipart form with a 'file' field")
    try:
        return decode_image(io.BytesIO(data), classifier.img_size, classifier.in_chans, classifier.interpolation,
                            formats=ALLOWED_FORMATS, max_pixels=max_pixels)
    except UnidentifiedImageError:
        raise RequestError(415, f"not an image of an accepted format ({', '.join(ALLOWED_FORMATS)})") from None
    except ImageTooLarge as error:
        raise RequestError(413, f"image too large: {error}") from None
    except DECODE_ERRORS as error:
        if type(error).__name__ == "DecompressionBombError":
            raise RequestError(413, "image too large: it decodes to more pixels than allowed") from None
        raise RequestError(400, f"the image could not be decoded ({type(error).__name__}); it may be truncated "
                                f"or damaged") from None


def create_app(classifier: ServedClassifier, settings: ServeSettings, description: dict[str, Any],
               rule: DecisionRule | None = None) -> RequestGuard:
    """The ASGI app serving `classifier` (anything with class_names, img_size, in_chans, interpolation and
    probabilities(uint8 batch)); `description` is what /metadata reports; `rule` makes each answer's decision
    (default: the most probable class)."""
    rule = rule or DecisionRule(tuple(classifier.class_names))
    description = {**description, **rule.describe()}
    telemetry = Telemetry()
    batcher = DynamicBatcher(classifier.probabilities, settings.max_batch, settings.max_wait_ms / 1000,
                             settings.max_queue, on_batch=telemetry.batch_sizes.observe)
    telemetry.queue_depth.set_function(lambda: batcher.depth)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="imgcls", version=description.get("imgcls_version", ""), lifespan=lifespan,
                  description=f"Image classifier {description.get('model')}: {len(classifier.class_names)} classes.")

    @app.exception_handler(RequestError)
    async def request_error(request, error: RequestError):
        headers = {"Retry-After": "1"} if error.status == 503 else None
        return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request, error: Exception):  # a bug: say so without a trace or a path
        return JSONResponse({"error": "internal error while handling the request"}, status_code=500)

    _prediction_routes(app, _classifier_call(classifier, batcher, settings, rule), settings, description)
    _information_routes(app, batcher, telemetry, settings, description)
    return RequestGuard(app, int(settings.max_upload_mb * 2**20), settings.timeout_s, settings.token,
                        observe=telemetry.observe)


def _classifier_call(classifier: ServedClassifier, batcher: DynamicBatcher, settings: ServeSettings,
                     rule: DecisionRule):
    """async classify(image bytes, topk) -> {"decision", "predictions": ranked classes}: decode off the event loop
    (a pool of as many threads as cores: more only fight over the GIL), batch, rank, decide."""
    decoders = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="imgcls-decode")

    async def classify(data: bytes, topk: int) -> dict[str, Any]:
        try:
            batcher.announce()
        except Overloaded:
            raise _at_capacity() from None
        try:
            image = await asyncio.get_running_loop().run_in_executor(decoders, decode_upload, data, classifier,
                                                                     settings.max_pixels)
        except BaseException:
            batcher.withdraw()
            raise
        try:
            probs = await asyncio.wait_for(batcher.submit(image, announced=True), settings.timeout_s)
        except Overloaded:
            raise _at_capacity() from None
        except TimeoutError:
            raise RequestError(504, f"no answer within {settings.timeout_s:g} s (--timeout-s)") from None
        return {"decision": rule.decide(probs[None])[0],
                "predictions": top_classes(probs[None], classifier.class_names, topk)[0]}

    return classify


def _at_capacity() -> RequestError:
    return RequestError(503, "the server is at capacity; retry shortly")


def _prediction_routes(app, classify, settings: ServeSettings, description: dict) -> None:
    @app.post("/predict", summary="Top-k classes of one image (multipart field 'file', or the raw image bytes)")
    async def predict(request: Request, topk: int = settings.topk):
        uploads = await _uploads(request, settings, single=True)
        answer = await classify(uploads[0][1], _checked_topk(topk))
        return {**answer, "rule": description["decision"], "model": description["model"]}

    @app.post("/predict/batch", summary="Top-k classes of several images (multipart fields 'files')")
    async def predict_batch(request: Request, topk: int = settings.topk):
        uploads = await _uploads(request, settings, single=False)
        topk = _checked_topk(topk)

        async def one(name: str, data: bytes) -> dict:
            try:
                return {"file": name, **await classify(data, topk)}
            except RequestError as error:
                if error.status in (503, 504):
                    raise
                return {"file": name, "error": error.message, "status": error.status}

        return {"results": list(await asyncio.gather(*(one(name, data) for name, data in uploads))),
                "rule": description["decision"]}


def _information_routes(app, batcher: DynamicBatcher, telemetry, settings: ServeSettings, description: dict) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return (Path(__file__).parent / "page.html").read_text().replace("{{TOPK}}", str(settings.topk))

    @app.get("/health", summary="Liveness: the model is loaded and the batcher runs")
    async def health():
        return {"status": "ok", "queue_depth": batcher.depth}

    @app.get("/metadata", summary="The model: classes, input size, channels, version")
    async def metadata():
        return {**description, "max_batch": settings.max_batch, "max_upload_mb": settings.max_upload_mb}

    @app.get("/metrics", summary="Prometheus text: requests by status, latency, batch sizes, queue depth")
    async def metrics():
        body, content_type = telemetry.exposition()
        return Response(body, media_type=content_type)


def _checked_topk(topk: int) -> int:
    if topk < 1:
        raise RequestError(400, f"topk must be at least 1, got {topk}")
    return topk


async def _uploads(request, settings: ServeSettings, single: bool) -> list[tuple[str, bytes]]:
    """(file name, bytes) of the uploaded image(s): multipart fields 'file'/'files', or a raw image body."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("multipart/form-data"):
            form = await request.form(max_files=1 if single else settings.max_batch * 4, max_fields=16,
                                      max_part_size=int(settings.max_upload_mb * 2**20))
            files = [value for key, value in form.multi_items() if key in ("file", "files")
                     and hasattr(value, "read")]
            if not files:
                raise RequestError(400, "the form has no image: send it in a field named 'file' ('files' for "
                                        "/predict/batch)")
            return [(Path(upload.filename or "upload").name, await upload.read()) for upload in files]
        if content_type and not content_type.startswith(("image/", "application/octet-stream")):
            raise RequestError(415, f"content type {content_type.split(';')[0]} is not an image; send image/* "
                                    f"bytes or multipart/form-data")
        return [("upload", await request.body())]
    except BodyRefused as refused:
        raise RequestError(refused.status, refused.message) from None
    except HTTPException as error:  # Starlette's answer to a form it cannot parse: in our JSON shape
        raise RequestError(400, f"malformed multipart form: {error.detail}") from None
    except (ValueError, KeyError) as error:  # python-multipart's complaints about a malformed form
        raise RequestError(400, f"malformed multipart form ({type(error).__name__})") from None
