"""`--method auto` measured: of the CAMs that can explain a CNN, at the layer chosen by resolution and at the next
finer one, the one whose maps are the most faithful for this model on held-out images (the deletion/insertion
score of engine/faithfulness).

No one CAM or layer is best on every model. On a cue at a random place (docs/explain.md) Grad-CAM at the deepest
7x7-or-finer layer found the cue on resnet18 and DenseNet-SE, but missed it on an EfficientNet-Lite0 fine-tuned
from ImageNet, where LayerCAM's element-wise gradients found it far more often; and on a ConvNeXt, whose 7x7
depthwise blocks spread the cue over the whole 8x8 map, only the finer 16x16 stem could point at it. Grad-CAM at
the resolution-chosen layer stays the default: it is kept unless another candidate scores at least MARGIN more.

A replacement must also pass the randomisation check (Adebayo et al., 2018). Grad-CAM++ and LayerCAM drew much
the same maps for resnet18 and DenseNet-SE with random weights as with the trained ones: they showed the bright
square whatever the model had learned. So every candidate is also drawn for a copy of the model with random
weights, and one whose maps correlate with those above LIKE_RANDOM (mean Spearman) cannot replace the default:
LayerCAM on resnet18 measured 0.73-0.78. The default is not barred by it, since the correlation is not a verdict
on its own: where the evidence is the most salient thing in the image (a white square on smooth grey), a random
network's maps point at it too, and a trained model's faithful Grad-CAM correlated with them at 0.50. Nor is a
lower correlation than the default's required: on Lite0 the default's was -0.07 because its maps pointed nowhere
in particular. A ViT keeps attention rollout (Grad-CAM over its patch tokens measured far worse), so it has
nothing to choose from.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional import spearman_corrcoef

from imgcls.engine.explain import CAM_CANDIDATES, cam_layer, explain_images, finer_cam_layer, resolve_method
from imgcls.engine.faithfulness import deletion_insertion

MARGIN = 0.05  # how much more faithful another candidate must score to replace the default
LIKE_RANDOM = 0.5  # a replacement's maps may correlate with a random-weights model's up to this (Spearman)
TIE = 0.02  # replacements scoring this close to the best are tied: the least like a random model's maps wins


@dataclass(frozen=True)
class MapChoice:
    """The method and layer (None: rollout's every block) the maps of a model are drawn with; each candidate's
    mean deletion/insertion score ("gradcam at layer2": score, the default first) and the mean Spearman
    correlation of its maps with a random-weights model's (`randomised`), on `images` images of `split`
    (empty when there was nothing to compare)."""
    method: str
    layer: str | None
    scores: dict[str, float]
    images: int = 0
    split: str = ""
    randomised: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.method if self.layer is None else f"{self.method} at {self.layer}"

    @property
    def reason(self) -> str:
        """"layercam at blocks.4: the most faithful on 16 val images (layercam at blocks.4 0.69, ...)"."""
        if len(self.scores) < 2:
            return f"{self.name}: the only candidate for this model"
        ranked = ", ".join(f"{name} {score:.2f}" for name, score in
                           sorted(self.scores.items(), key=lambda item: -item[1]))
        barred = [name for name, value in list(self.randomised.items())[1:] if value > LIKE_RANDOM]
        best = max(score for name, score in self.scores.items() if name not in barred)
        verdict = f"kept, no other scored {MARGIN:.2f} more" if self.name == next(iter(self.scores)) else \
            "the most faithful" if self.scores[self.name] == best else \
            f"within {TIE} of the most faithful and the least like a random-weights model's maps"
        check = f"; barred, like a random-weights model's maps: {', '.join(barred)}" if barred else ""
        return f"{self.name}: {verdict} on {self.images} {self.split} images ({ranked}{check})"

    def to_dict(self) -> dict:
        return {"method": self.method, "layer": self.layer,
                "scores": {name: round(score, 4) for name, score in self.scores.items()},
                "randomised": {name: round(value, 4) for name, value in self.randomised.items()},
                "images": self.images, "split": self.split}

    @classmethod
    def of_dict(cls, values: dict | None) -> MapChoice | None:
        if not values or values.get("method") is None:
            return None
        layer = values.get("layer")
        return cls(str(values["method"]), None if layer is None else str(layer),
                   {str(name): float(score) for name, score in values.get("scores", {}).items()},
                   int(values.get("images", 0)), str(values.get("split", "")),
                   {str(name): float(value) for name, value in values.get("randomised", {}).items()})


def candidates(model, example, layer: str | None = None) -> list[tuple[str, str | None]]:
    """(method, layer) pairs `auto` compares for `model`, the default first (it wins ties): a ViT's rollout
    alone; for a CNN, Grad-CAM, HiResCAM and LayerCAM (its structural choice first: resolve_method) at `layer`,
    or at the resolution-chosen layer and the next finer one."""
    base = resolve_method(model, "auto")
    if base == "rollout":
        return [(base, None)]
    methods = (base, *(method for method in CAM_CANDIDATES if method != base))
    if layer is not None:
        return [(method, layer) for method in methods]
    layers = [cam_layer(model, example[:1]).name]
    finer = finer_cam_layer(model, example[:1])
    layers += [finer.name] if finer is not None else []
    return [(method, name) for name in layers for method in methods]


def choose_method(model, images, targets: list[int], layer: str | None = None, split: str = "") -> MapChoice:
    """The candidate whose maps of `images` (normalized (N, C, H, W)) for the `targets` classes score highest:
    the default unless another beats it by MARGIN without looking like a random-weights model's maps; of
    replacements within TIE of the best, the one least like them (ConvNeXt's stem: Grad-CAM 0.405, HiResCAM
    0.399, LayerCAM 0.395, whose maps alone passed the randomisation check with timm's initialisation too)."""
    if len(images) == 0:
        base = resolve_method(model, "auto")
        return MapChoice(base, None if base == "rollout" else layer, {}, 0, split)
    pairs = candidates(model, images, layer)
    if len(pairs) == 1:
        return MapChoice(*pairs[0], {}, len(images), split)
    random_model = randomised_copy(model)
    scores, randomised = {}, {}
    for method, name in pairs:
        maps = explain_images(model, images, targets, method, name).maps
        scores[f"{method} at {name}"] = deletion_insertion(model, images, maps, targets).score
        randomised[f"{method} at {name}"] = similarity(maps, explain_images(random_model, images, targets, method,
                                                                            name).maps)
    names = list(scores)
    allowed = [index for index, name in enumerate(names) if index == 0 or randomised[name] <= LIKE_RANDOM]
    best = max(scores[names[index]] for index in allowed)  # the default is always allowed
    if best < scores[names[0]] + MARGIN:
        return MapChoice(*pairs[0], scores, len(images), split, randomised)
    tied = [index for index in allowed if scores[names[index]] >= best - TIE]
    chosen = min(tied, key=lambda index: randomised[names[index]])
    return MapChoice(*pairs[chosen], scores, len(images), split, randomised)


def randomised_copy(model):
    """The same architecture with fresh random weights (the model randomisation of Adebayo et al., 2018): every
    module's own initialisation, seeded, the caller's random state untouched."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for module in fresh.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
    return fresh.eval()


def similarity(first: np.ndarray, second: np.ndarray, side: int = 64) -> float:
    """The mean Spearman correlation of paired maps ((N, H, W), compared at most side x side); maps that are
    flat count as unrelated."""
    def small(maps: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
        if tensor.shape[-1] > side or tensor.shape[-2] > side:
            tensor = F.adaptive_avg_pool2d(tensor, side)
        return tensor.flatten(1)
    a, b = small(first), small(second)
    varied = (a.std(dim=1) > 0) & (b.std(dim=1) > 0)
    if not bool(varied.any()):
        return 0.0
    correlations = spearman_corrcoef(a[varied].T, b[varied].T)
    return float(torch.as_tensor(correlations).sum()) / len(a)
