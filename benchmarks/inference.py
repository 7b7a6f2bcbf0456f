"""Inference speed of an exported model: onnxruntime against eager PyTorch (fp32, bf16), side by side.

    python benchmarks/inference.py [--seconds 4] [--out docs/benchmarks.md]

For resnet18, efficientnet_lite0 and vit_tiny_patch16_224 at 224 px (random weights: speed does not depend on
them), images/s at batch 1 and 64 of the same exported graph (imgcls's export: uint8 in, normalisation and
softmax inside) on onnxruntime (CPU provider, all cores) and of the eager module in torch, fp32 and bf16
autocast. Each cell runs for about `--seconds` after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import replace_section  # noqa: E402

MARKER = "## Inference: onnxruntime vs eager PyTorch"
MODELS = ("resnet18", "efficientnet_lite0", "vit_tiny_patch16_224")


def rate(run, batch: int, seconds: float) -> float:
    started = time.perf_counter()
    run()  # warm-up: kernels chosen, memory allocated
    if time.perf_counter() - started > seconds:  # one call already takes longer (emulated bf16): that call
        return batch / (time.perf_counter() - started)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run()
        count += batch
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    import onnxruntime
    import torch

    import imgcls
    from imgcls.engine.export import example_batch, export_module, export_onnx
    from imgcls.engine.precision import cpu_supports_bf16
    from imgcls.environment import cpu_name

    work = Path(tempfile.mkdtemp(prefix="imgcls-inference-"))
    rows = []
    for name in MODELS:
        model = imgcls.create_model(name, num_classes=1000).eval()
        module = export_module(model, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        path = work / f"{name}.onnx"
        export_onnx(module, example_batch(3, 224, "uint8"), path, {"model": name})
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for batch in (1, 64):
            images = example_batch(3, 224, "uint8", batch)
            numpy_images = images.numpy()
            cells = {"onnxruntime": rate(lambda: session.run(None, {"images": numpy_images}), batch, args.seconds)}
            for precision in ("fp32", "bf16"):
                def eager():
                    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                        module(images)
                cells[f"torch {precision}"] = rate(eager, batch, args.seconds)
            rows.append((name, batch, cells))
            print(name, batch, {k: round(v, 1) for k, v in cells.items()}, flush=True)
    bf16 = "native bf16" if cpu_supports_bf16() else "no native bf16 (emulated)"
    lines = [MARKER, "", f"`python benchmarks/inference.py --seconds {args.seconds:g}` on {cpu_name()}, "
             f"{os.cpu_count()} cores, {bf16}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__} "
             f"({time.strftime('%Y-%m-%d')}). Images/s at 224 px; the same exported graph (uint8 in, probabilities "
             f"out) in onnxruntime and eager PyTorch.", "",
             "| model | batch | onnxruntime | torch fp32 | torch bf16 | onnxruntime / torch fp32 |",
             "|---|---|---|---|---|---|"]
    for name, batch, cells in rows:
        lines.append(f"| {name} | {batch} | {cells['onnxruntime']:.1f} | {cells['torch fp32']:.1f} | "
                     f"{cells['torch bf16']:.1f} | {cells['onnxruntime'] / cells['torch fp32']:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    replace_section(Path(args.out), MARKER, text)


if __name__ == "__main__":
    main()
