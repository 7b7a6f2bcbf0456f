"""`imgcls serve`: a trained run (or an exported ONNX file) behind an HTTP API and an upload page."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from imgcls.errors import ImgclsError


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          insecure: bool = False, max_batch: int = 32, max_wait_ms: float = 5.0, max_upload_mb: float = 10.0,
          timeout_s: float = 30.0, max_queue: int = 256, topk: int = 5) -> None:
    """Serve `model` (a run folder or MODEL.onnx) until interrupted. Binds 127.0.0.1 by default; any other
    address needs a bearer `token` (or, knowingly, `insecure`)."""
    import uvicorn

    from imgcls.console import get_console, warn
    from imgcls.serve.app import ServeSettings, create_app
    from imgcls.workflows.predict import classifier_for

    if not is_loopback(host):
        if not token and not insecure:
            raise ImgclsError(f"--host {host} accepts connections from other machines: pass --token SECRET (clients "
                              f"send 'Authorization: Bearer SECRET'), or --insecure to serve without one")
        if not token:
            warn(f"serving on {host} without a token (--insecure): anyone who reaches this port can use the model")
    for name, value in (("--max-batch", max_batch), ("--max-queue", max_queue), ("--port", port)):
        if value < 1:
            raise ImgclsError(f"{name} must be at least 1, got {value}")
    if max_upload_mb <= 0 or timeout_s <= 0 or max_wait_ms < 0:
        raise ImgclsError("--max-upload-mb and --timeout-s must be positive, --max-wait-ms 0 or more")
    classifier = classifier_for(model, "auto")
    settings = ServeSettings(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                             max_upload_mb=max_upload_mb, timeout_s=timeout_s, token=token, topk=topk)
    app = create_app(classifier, settings, describe(classifier, model))
    get_console().print(f"serving {model} on http://{host}:{port}/  (upload page: /, API docs: /docs, "
                        f"metrics: /metrics; Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=5)


def describe(classifier, model: str | Path) -> dict:
    """/metadata: what a client needs to know about the model."""
    from imgcls import __version__

    backend = "onnxruntime" if Path(model).suffix.lower() == ".onnx" else "torch"
    name = getattr(classifier, "model_name", None) or getattr(getattr(classifier, "model", None), "imgcls_name", "?")
    return {"model": name, "class_names": list(classifier.class_names), "img_size": classifier.img_size,
            "channels": classifier.in_chans, "interpolation": classifier.interpolation, "backend": backend,
            "imgcls_version": __version__}
