"""`imgcls explain`: what a trained model looked at in each image (Grad-CAM and relatives, attention rollout)."""

from __future__ import annotations

from pathlib import Path

import torch

from imgcls.atomic import check_replaceable
from imgcls.data.folders import image_files
from imgcls.data.images import decode_files
from imgcls.data.transforms import normalize_batch
from imgcls.engine.explain import METHODS, explain_images, is_vit, resolve_method
from imgcls.engine.faithfulness import deletion_insertion
from imgcls.engine.inference import predict_probabilities
from imgcls.engine.map_choice import MapChoice, choose_method
from imgcls.errors import ImgclsError
from imgcls.reporting import catalog
from imgcls.reporting.explanations import Explained, explanation_figure, explanation_grid
from imgcls.workflows.looked_at import SCORED
from imgcls.workflows.predict import LoadedModel, load


def explain(run: str | Path, inputs: list[str | Path], method: str = "auto", target: str | None = None,
            out: str | Path | None = None, batch_size: int = 16, layer: str | None = None) -> list[dict]:
    """Maps of what the model looked at in every image file (folders searched recursively).

    `target` is a class name or index to explain (default: each image's predicted class). Writes one overlay
    PNG per image and a grid of all into `out` (default RUN/explain/<method>/). Returns one dict per image:
    path, map ((H, W) float32 in [0, 1] at the model's input size), predicted and probability, target and
    target_probability, figure, method, layer, grid and source (where the map comes from, in words),
    faithfulness (the map's deletion/insertion score: about 0 for a random map, near 1 at best) and warning (why
    not to read the map as evidence, or None), chosen_because (how `auto` chose the method); or path and error
    for an unreadable file. `method` auto picks rollout for ViTs (Grad-CAM with a --target) and, for a CNN, the
    CAM measured most faithful for this model (Grad-CAM, HiResCAM or LayerCAM: engine/map_choice); `layer` names
    the module a CAM is taken at (default: the deepest with a map of at least 7x7).
    """
    if method not in METHODS:
        raise ImgclsError(f"--method must be one of {', '.join(METHODS)}, got '{method}'")
    loaded = load(run)
    chosen = _class_index(target, loaded.class_names)
    files = image_files(inputs)
    method, layer, choice, recorded = _method_for(loaded, method, chosen, layer, files)
    because = "" if choice is None else f"{choice.reason}, in the run's report" if recorded else choice.reason
    folder = _output_folder(loaded, method, out)
    results: list[dict] = []
    explained: list = []
    for start in range(0, len(files), batch_size):
        images, positions, errors = decode_files(files[start:start + batch_size], loaded.img_size, loaded.in_chans,
                                                 loaded.interpolation)
        results += [{"path": str(files[start + p]), "error": reason} for p, reason in errors.items()]
        if not positions:
            continue
        batch = normalize_batch(torch.from_numpy(images), loaded.mean, loaded.std)
        probs = predict_probabilities(loaded.model, [batch], loaded.tta, temperature=loaded.temperature).numpy()
        targets = [chosen if chosen is not None else int(row.argmax()) for row in probs]
        maps = explain_images(loaded.model, batch, targets, method, layer)
        scores = deletion_insertion(loaded.model, batch, maps.maps, targets).scores
        for row, position in enumerate(positions):
            results.append({**_result(files[start + position], probs[row], targets[row], maps.maps[row],
                                      loaded.class_names),
                            "method": method, "layer": maps.layer, "grid": list(maps.grid), "source": maps.source,
                            "faithfulness": float(scores[row]), "warning": maps.coarse, "chosen_because": because})
            explained.append(images[row])
    _write_figures(folder, [r for r in results if "map" in r], explained, method)
    return sorted(results, key=lambda result: files.index(Path(result["path"])))


def _method_for(loaded: LoadedModel, method: str, target: int | None, layer: str | None,
                files: list[Path]) -> tuple[str, str | None, MapChoice | None, bool]:
    """The method and layer the maps are drawn with, how `auto` chose them and whether the run's report did: as
    asked; for `auto` on a CNN, the candidate measured most faithful for this model (engine/map_choice): the run's
    report's choice (RUN/looked_at.json) unless a --layer is given, else measured here on the first images."""
    model = loaded.model
    if method != "auto" or is_vit(model):
        return resolve_method(model, method, class_specific=target is not None), layer, None, False
    recorded = MapChoice.of_dict((loaded.run.read_looked_at() or {}).get("choice")) if loaded.run else None
    if layer is None and recorded is not None:
        return recorded.method, recorded.layer, recorded, True
    images, positions, _ = decode_files(files[:SCORED], loaded.img_size, loaded.in_chans, loaded.interpolation)
    batch = normalize_batch(torch.from_numpy(images), loaded.mean, loaded.std)
    targets: list[int] = [] if not positions else [target] * len(batch) if target is not None else \
        predict_probabilities(model, [batch], loaded.tta, temperature=loaded.temperature).argmax(1).tolist()
    choice = choose_method(model, batch, targets, layer, split="given")
    return choice.method, choice.layer, choice, False


def _class_index(target: str | None, class_names: list[str]) -> int | None:
    if target is None:
        return None
    if target in class_names:
        return class_names.index(target)
    if target.isdigit() and int(target) < len(class_names):
        return int(target)
    raise ImgclsError(f"--target '{target}' is not a class of this model; choose one of {', '.join(class_names)}")


def _output_folder(loaded: LoadedModel, method: str, out: str | Path | None) -> Path:
    if out is not None:
        return Path(out).expanduser()
    if loaded.run is None:
        raise ImgclsError("a bare weights file has no run folder to write into; pass --out DIR")
    return loaded.run.explanations_dir(method)


def _result(path: Path, probs, target: int, heatmap, class_names: list[str]) -> dict:
    predicted = int(probs.argmax())
    return {"path": str(path), "map": heatmap, "predicted": class_names[predicted],
            "probability": float(probs[predicted]), "target": class_names[target],
            "target_probability": float(probs[target])}


def _write_figures(folder: Path, results: list[dict], images: list, method: str) -> None:
    """One figure per image and the grid of all of them; files imgcls did not write are never replaced."""
    if not results:
        return
    items = []
    for index, (result, image) in enumerate(zip(results, images)):
        title = (f"{Path(result['path']).name}: predicted {result['predicted']} ({result['probability']:.2f}); "
                 f"map of {result['target']} ({result['target_probability']:.2f})\n{_source(result)}")
        items.append(Explained(image, result["map"], title))
        path = folder / catalog.explained(index, result["path"])
        check_replaceable(path, "--out")
        result["figure"] = str(explanation_figure(items[-1], path, method))
    grid = folder / catalog.EXPLAIN_GRID
    check_replaceable(grid, "--out")
    short = [Explained(item.image, item.heatmap, f"{Path(r['path']).name[:22]}\n{r['predicted']} "
                       f"({r['probability']:.2f})") for item, r in zip(items, results)]
    mean = sum(result["faithfulness"] for result in results) / len(results)
    explanation_grid(short, grid, f"what the model looked at ({results[0]['source']}; mean faithfulness {mean:.2f})")


def _source(result: dict) -> str:
    """Where a map comes from and how far it can be trusted, for a figure's title."""
    coarse = " (coarse map)" if result["warning"] else ""
    return f"{result['source']}, faithfulness {result['faithfulness']:.2f}{coarse}"
