"""Export a trained model as one file another stack loads without imgcls: ONNX (onnxruntime, TensorRT,
OpenVINO, ...) or TorchScript. The exported graph includes the run's preprocessing and output: it takes a
batch of images already resized as imgcls resizes them (uint8 by default) and returns class probabilities
(averaged with the mirror image when the run used TTA), so its answers are `imgcls predict`'s."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import onnx
import torch
from torch import nn

from imgcls.atomic import write_atomic
from imgcls.errors import ImgclsError, first_line

METADATA_KEY = "imgcls"  # TorchScript: extra file imgcls.json; ONNX: metadata_props (one key per field)


def export_module(model, mean, std, input_type: str = "uint8", tta: bool = False, temperature: float = 1.0):
    """The model wrapped with its normalisation (for uint8 input), calibration and softmax (and TTA), as
    engine/inference.batch_logits computes them."""
    class Exported(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            channels = len(mean)
            self.register_buffer("offset", torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1) * 255)
            self.register_buffer("scale", 1 / (torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1) * 255))

        def forward(self, images):
            x = (images.float() - self.offset) * self.scale if input_type == "uint8" else images
            logits = self.model(x).float()
            if tta:
                probs = (logits.softmax(dim=1) + self.model(x.flip(-1)).float().softmax(dim=1)) / 2
                logits = probs.clamp_min(1e-12).log()
            return (logits / temperature).softmax(dim=1)

    return Exported().eval()


def example_batch(channels: int, img_size: int, input_type: str, batch: int = 2):
    """A batch of the exported input's kind (seeded; the content does not matter to tracing)."""
    generator = torch.Generator().manual_seed(0)
    if input_type == "uint8":
        return torch.randint(0, 256, (batch, channels, img_size, img_size), dtype=torch.uint8, generator=generator)
    return torch.randn(batch, channels, img_size, img_size, generator=generator)


def export_onnx(module, example, path: Path, metadata: dict, dynamic_batch: bool = True,
                opset: int | None = None) -> None:
    """Write `module` as ONNX (torch.export-based exporter) with imgcls's metadata, atomically."""
    dynamic = {"images": {0: torch.export.Dim("batch", min=1, max=65536)}} if dynamic_batch else None
    try:
        program = torch.onnx.export(module, (example,), input_names=["images"], output_names=["probabilities"],
                                    opset_version=opset, dynamo=True, external_data=False, dynamic_shapes=dynamic,
                                    optimize=True, verbose=False)
    except Exception as error:  # the exporter raises many types (unsupported op, dynamo, onnxscript)
        raise ImgclsError(f"{metadata['model']} cannot be exported to ONNX ({first_line(error)}); "
                          f"try --format torchscript, or another --opset") from None
    if program is None:  # only the legacy (dynamo=False) exporter returns nothing
        raise ImgclsError(f"{metadata['model']} could not be exported to ONNX; try --format torchscript")
    proto = program.model_proto
    proto.producer_name = "imgcls"  # near the file's start: later exports may replace a file that says this
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(proto)
    write_atomic(path, lambda tmp: onnx.save_model(proto, str(tmp)))


def export_torchscript(module, example, path: Path, metadata: dict) -> None:
    """Write `module` traced as TorchScript, with imgcls's metadata as the extra file imgcls.json."""
    try:
        with torch.no_grad():
            traced = torch.jit.trace(module, example, check_trace=False)
    except Exception as error:  # tracing fails with RuntimeError, TypeError, ... on unsupported code
        raise ImgclsError(f"{metadata['model']} cannot be traced to TorchScript ({first_line(error)}); "
                          f"try --format onnx") from None
    files = {f"{METADATA_KEY}.json": json.dumps(metadata)}
    write_atomic(path, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=files))


def is_our_torchscript(path: Path) -> bool:
    """A TorchScript archive written by imgcls (it carries extra/imgcls.json)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(f"extra/{METADATA_KEY}.json") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
