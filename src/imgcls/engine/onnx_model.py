"""An exported ONNX classifier on onnxruntime: no torch import, for `imgcls predict MODEL.onnx` and serving."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from imgcls.errors import ImgclsError, first_line


@dataclass
class OnnxClassifier:
    session: object  # onnxruntime.InferenceSession
    path: Path
    class_names: list[str]
    img_size: int
    in_chans: int
    interpolation: str
    input_type: str  # uint8: images as decoded; float: normalised with mean/std first
    mean: tuple[float, ...]
    std: tuple[float, ...]
    model_name: str
    precision: str = "fp32"
    threshold: float | None = None  # two classes: the positive class from this probability on (None: argmax)
    threshold_rule: str = ""
    positive_class: int = 1
    backend: str = "onnxruntime"

    def probabilities(self, images):
        """(N, K) float32 class probabilities of a (N, C, S, S) uint8 numpy batch."""
        batch = images
        if self.input_type == "float":
            mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1) * 255
            std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1) * 255
            batch = (images.astype(np.float32) - mean) / std
        return self.session.run(["probabilities"], {"images": batch})[0]


def load_onnx(path: str | Path, threads: int | None = None) -> OnnxClassifier:
    """An ONNX file written by `imgcls export`, ready for onnxruntime on the CPU."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ImgclsError(f"{path} does not exist; pass an ONNX file written by 'imgcls export'")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own exception types for unreadable models
        raise ImgclsError(f"{path} is not a readable ONNX model ({first_line(error)}); export it again with "
                          f"'imgcls export RUN --format onnx'") from None
    meta = session.get_modelmeta().custom_metadata_map
    if "class_names" not in meta:
        raise ImgclsError(f"{path} has no imgcls metadata (class names, input size); export it with "
                          f"'imgcls export RUN --format onnx'")
    return OnnxClassifier(session, path, json.loads(meta["class_names"]), int(meta["img_size"]),
                          int(meta["channels"]), meta.get("interpolation", "bilinear"), meta.get("input_type", "uint8"),
                          tuple(json.loads(meta["mean"])), tuple(json.loads(meta["std"])), meta.get("model", "?"),
                          threshold=json.loads(meta.get("threshold", "null")), threshold_rule=meta.get("threshold_rule", ""),
                          positive_class=int(meta.get("positive_index", "1")))

