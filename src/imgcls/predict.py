"""Batched prediction on image files and folders."""

from __future__ import annotations

from pathlib import Path

from imgcls.data.cache import DECODE_ERRORS
from imgcls.data.images import decode_image, is_image_file
from imgcls.errors import ImgclsError


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for images (hidden files skipped), sorted."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p)
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise ImgclsError(f"folder {path} has no images (jpg, jpeg, png, bmp, gif, webp, tif, tiff)")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ImgclsError(f"{path} does not exist; pass image files or folders of images")
    return files


def predict_files(model, inputs, class_names: list[str], img_size: int, channels: int, mean, std,
                  topk: int = 5, batch_size: int = 64, tta: bool = False, precision: str = "fp32") -> list[dict]:
    """Decode, batch and classify; one result per file, unreadable files reported with their error.
    `tta` averages the probabilities of each image and its horizontal mirror (as the run was evaluated)."""
    import torch

    from imgcls.data.transforms import normalize_batch

    if topk < 1:
        raise ImgclsError(f"--topk must be at least 1, got {topk}")
    topk = min(topk, len(class_names))
    files = expand_inputs(inputs)
    results: list[dict] = [{"path": str(path)} for path in files]
    model.eval()
    for start in range(0, len(files), batch_size):
        batch, positions = [], []
        for offset, path in enumerate(files[start : start + batch_size]):
            try:
                batch.append(torch.from_numpy(decode_image(path, img_size, channels)))
                positions.append(start + offset)
            except DECODE_ERRORS as error:
                results[start + offset]["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
        if not batch:
            continue
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            images = normalize_batch(torch.stack(batch), mean, std)
            if tta:
                from imgcls.engine.evaluate import tta_logits

                probs = tta_logits(model, images).exp()
            else:
                probs = model(images).float().softmax(dim=1)
        top_probs, top_indices = probs.topk(topk, dim=1)
        for row, position in enumerate(positions):
            results[position]["predictions"] = [
                {"class": class_names[int(index)], "probability": float(prob)}
                for prob, index in zip(top_probs[row], top_indices[row])
            ]
    return results
