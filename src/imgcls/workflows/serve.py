"""`imgcls serve`: a trained run (or an exported ONNX file) behind an HTTP API and an upload page."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import uvicorn

from imgcls import __version__
from imgcls.console import get_console, warn
from imgcls.errors import ImgclsError
from imgcls.serving.app import ServeSettings, create_app
from imgcls.workflows.predict import Classifier, classifier_for, decision_rule


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None,
          insecure: bool = False, threshold: str | None = None, abstain_below: str | None = None) -> None:
    """Serve `model` (a run folder or MODEL.onnx) until interrupted, with `settings` (batching, limits, token;
    ServeSettings() by default); each answer's decision is made as `imgcls.predict`'s (`threshold`,
    `abstain_below`). Binds 127.0.0.1 by default; any other address needs a bearer token in the
    settings (or, knowingly, `insecure`)."""
    settings = settings or ServeSettings()
    if not is_loopback(host):
        if not settings.token and not insecure:
            raise ImgclsError(f"--host {host} accepts connections from other machines: pass --token SECRET (clients "
                              f"send 'Authorization: Bearer SECRET'), or --insecure to serve without one")
        if not settings.token:
            warn(f"serving on {host} without a token (--insecure): anyone who reaches this port can use the model")
    _check(settings, port)
    classifier = classifier_for(model, "auto")
    rule = decision_rule(model, classifier, threshold, abstain_below)
    app = create_app(classifier, settings, describe(classifier), rule)
    get_console().print(f"serving {model} on http://{host}:{port}/ with {classifier.backend} "
                        f"({classifier.precision}) (upload page: /, API docs: /docs, metrics: /metrics; Ctrl-C stops)"
                        f"\ndecision: {rule.describe()['decision']}")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=5)


def _check(settings: ServeSettings, port: int) -> None:
    for name, value in (("--max-batch", settings.max_batch), ("--max-queue", settings.max_queue), ("--port", port)):
        if value < 1:
            raise ImgclsError(f"{name} must be at least 1, got {value}")
    if settings.max_upload_mb <= 0 or settings.timeout_s <= 0 or settings.max_wait_ms < 0:
        raise ImgclsError("--max-upload-mb and --timeout-s must be positive, --max-wait-ms 0 or more")


def describe(classifier: Classifier) -> dict[str, Any]:
    """/metadata: what a client needs to know about the model, and what answers (backend and precision), as the
    classifier itself says."""
    return {"model": classifier.model_name, "class_names": list(classifier.class_names),
            "img_size": classifier.img_size, "channels": classifier.in_chans,
            "interpolation": classifier.interpolation, "backend": classifier.backend,
            "precision": classifier.precision, "imgcls_version": __version__}
