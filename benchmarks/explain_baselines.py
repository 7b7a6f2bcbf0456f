"""How the faithfulness score of a run's maps depends on what a removed pixel becomes: the image's mean colour
(imgcls's choice) or black, for Grad-CAM at three layers, random maps and the object's own silhouette.

    python benchmarks/explain_baselines.py RUN   # a run trained on Fashion-MNIST (the README's main job)

Prints a Markdown table over 48 random test images (docs/explain.md, "The README's Fashion-MNIST run").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import imgcls
from imgcls.data.transforms import normalize_batch
from imgcls.engine.explain import explain_images
from imgcls.engine.faithfulness import deletion_insertion, random_maps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers import fashion_mnist_arrays  # noqa: E402

LAYERS = ("features.17", "features.10", "features")  # the recipe's fastcnn: 7x7 (default), 14x14, 3x3 (old rule)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    args = parser.parse_args()
    images, _ = fashion_mnist_arrays("test")
    chosen = np.random.default_rng(0).choice(len(images), 48, replace=False)
    loaded = imgcls.load(args.run)
    batch = normalize_batch(torch.from_numpy(images[chosen][:, None]), loaded.mean, loaded.std)
    model = loaded.model.eval()
    with torch.no_grad():
        targets = model(batch).argmax(1).tolist()
    black = -torch.tensor(loaded.mean) / torch.tensor(loaded.std)
    rows = [(f"Grad-CAM at {layer}", explain_images(model, batch, targets, "gradcam", layer=layer).maps)
            for layer in LAYERS]
    rows += [("random maps", random_maps(len(batch), 28, 28)),
             ("the garment itself (its non-black pixels)", (images[chosen] > 0).astype(np.float32))]
    print("| map | removed pixels take the image's mean colour | removed pixels turn black |")
    print("|---|---|---|")
    for name, maps in rows:
        grey = deletion_insertion(model, batch, maps, targets).score
        dark = deletion_insertion(model, batch, maps, targets, blank=black).score
        print(f"| {name} | {grey:.2f} | {dark:.2f} |")


if __name__ == "__main__":
    main()
