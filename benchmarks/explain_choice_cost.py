"""What `--method auto`'s measured choice (engine/map_choice) adds to a report: the time of choose_method on 16
images spread over a run's val split, for runs of benchmarks/explain_cues.py (kept with its --reuse DIR).

    python benchmarks/explain_choice_cost.py DIR/runs/resnet18-224 DIR/runs/efficientnet_lite0-128

Prints one Markdown row per run: the model, its input size, the chosen map and the seconds (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import imgcls
from imgcls.data.images import decode_files
from imgcls.data.transforms import normalize_batch
from imgcls.engine.map_choice import choose_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    print("| run | input | auto picks | seconds |\n|---|---|---|---|")
    for run in args.runs:
        loaded = imgcls.load(run)
        files = sorted((Path(loaded.config.data.source) / "val").rglob("*.png"))
        files = [files[round(i)] for i in np.linspace(0, len(files) - 1, 16)]
        images, _, _ = decode_files(files, loaded.img_size, loaded.in_chans, loaded.interpolation)
        batch = normalize_batch(torch.from_numpy(images), loaded.mean, loaded.std)
        with torch.no_grad():
            targets = loaded.model.eval()(batch).argmax(1).tolist()
        started = time.perf_counter()
        choice = choose_method(loaded.model, batch, targets, split="val")
        print(f"| {run.name} | {loaded.img_size} px | {choice.name} | {time.perf_counter() - started:.1f} |")


if __name__ == "__main__":
    main()
