"""`imgcls predict` and `imgcls.load`: a trained run (or an ImageNet-pretrained model) applied to image files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from imgcls.config import Config, auto_precision_override, config_from_dict
from imgcls.data.folders import image_files
from imgcls.data.images import decode_files
from imgcls.engine.onnx_model import load_onnx
from imgcls.engine.ranking import DecisionRule, top_classes
from imgcls.errors import ImgclsError
from imgcls.metrics.operating_point import choose_threshold, parse_threshold
from imgcls.metrics.selective import confidence_for_accuracy, parse_abstain
from imgcls.plan import TrainPlan
from imgcls.run_files import RunFolder, locate_weights
from imgcls.run_files.predictions import load_split_predictions

if TYPE_CHECKING:
    from torch import nn

# This module is on the path of `imgcls predict` on an ONNX export, which must not import torch: the imports
# that need it (models, checkpoints, the torch classifier) are made inside the functions that use them.


@dataclass
class LoadedModel:
    model: nn.Module  # in eval mode
    name: str
    class_names: list[str]
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights_file: Path
    interpolation: str = "bilinear"
    tta: bool = False  # predictions average each image and its mirror, as the run was evaluated
    run: RunFolder | None = None
    config: Config | None = None  # what the run was asked to do (None for a bare weights file)
    plan: TrainPlan | None = None  # what it decided (None for runs of imgcls 0.1)
    temperature: float = 1.0  # calibration: logits / T before the softmax (1: not calibrated)
    threshold: float | None = None  # two classes: predict the positive class from this probability (None: argmax)
    threshold_rule: str = ""  # how the threshold was chosen (e.g. sensitivity=0.95)

    @property
    def run_dir(self) -> Path | None:
        return self.run.path if self.run is not None else None

    @property
    def positive_class(self) -> str | None:
        """The class whose two-class metrics the run reported (None: the default, the second class)."""
        if self.plan is not None:
            return self.plan.class_names[self.plan.positive_class]
        return self.config.train.positive_class if self.config is not None else None

    @property
    def positive_index(self) -> int:
        return self.class_names.index(self.positive_class) if self.positive_class in self.class_names else 1


def load(run: str | Path) -> LoadedModel:
    """A trained model from a run folder (or its best.safetensors), in eval mode, with its classes."""
    from imgcls.engine.checkpoint import load_weights_into, read_metadata
    from imgcls.models import create_model

    weights, folder = locate_weights(run)
    meta = read_metadata(weights)
    model = create_model(meta["model"], num_classes=meta["num_classes"], in_chans=meta["in_chans"],
                         img_size=meta["img_size"], **meta.get("options", {}))
    load_weights_into(model, weights)
    model.eval()
    config = plan = None
    if folder is not None:
        values = folder.read_config()
        config = config_from_dict(values, str(folder.config_file)) if values is not None else None
        saved_plan = folder.read_plan()
        plan = TrainPlan.from_dict(saved_plan) if saved_plan is not None else None
    tta = plan.tta if plan is not None else bool(config and config.train.tta)
    return LoadedModel(model, meta["model"], list(meta["class_names"]), int(meta["in_chans"]), int(meta["img_size"]),
                       tuple(meta["mean"]), tuple(meta["std"]), weights, meta.get("interpolation", "bilinear"), tta,
                       folder, config, plan, float(meta.get("temperature", 1.0)), meta.get("threshold"),
                       meta.get("threshold_rule", ""))


def load_pretrained(name: str, weights: str | None = None, pretrained: bool = False) -> LoadedModel:
    """An ImageNet-pretrained model used as is (zero-shot), labelled with ImageNet class names."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    from imgcls.models import create_model
    from imgcls.models.registry import model_defaults

    if weights is None and not pretrained:
        raise ImgclsError("predicting with --model needs its weights: pass --weights FILE or --pretrained")
    probe = create_model(name, num_classes=1000)
    num_classes = getattr(probe, "num_classes", 1000)
    model = create_model(name, num_classes=num_classes, weights=weights, pretrained=pretrained)
    model.eval()
    subset = infer_imagenet_subset(model) or "imagenet-1k"
    info = ImageNetInfo(subset)
    class_names = [info.index_to_description(index) for index in range(num_classes)]
    defaults = model_defaults(name)
    mean, std = defaults.normalization(3)
    return LoadedModel(model, name, class_names, 3, defaults.input_size, mean, std,
                       Path(weights) if weights else Path(name), defaults.interpolation)


BACKENDS = ("auto", "torch", "onnx")


class Classifier(Protocol):
    """What predicts (engine's TorchClassifier or OnnxClassifier): uint8 image batches in, probabilities out."""

    class_names: list[str]
    img_size: int
    in_chans: int
    interpolation: str
    precision: str  # what it computes in: fp32, bf16 or fp16
    threshold: float | None  # two classes: the positive class from this probability on (None: argmax)
    threshold_rule: str
    positive_class: int

    @property
    def backend(self) -> str: ...  # what answers: "torch" or "onnxruntime"

    @property
    def model_name(self) -> str: ...

    def probabilities(self, images: np.ndarray) -> np.ndarray: ...


def classifier_for(run: str | Path | LoadedModel, precision: str = "auto", backend: str = "auto") -> Classifier:
    """What predicts, behind one interface (uint8 batches in, `.probabilities` out):
    - an exported MODEL.onnx: onnxruntime, torch is never imported;
    - a run folder with a current ONNX export (RUN/model.onnx at least as new as its weights, written at the end
      of training or by `imgcls export`): the same, unless `backend` is torch or a precision other than fp32
      is asked for;
    - else the run's model in torch (`backend` onnx then is an error)."""
    if backend not in BACKENDS:
        raise ImgclsError(f"--backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    if not isinstance(run, LoadedModel):
        exported = Path(run) if Path(run).suffix.lower() == ".onnx" else _current_export(run)
        if exported is not None and backend != "torch" and precision in ("auto", "fp32"):
            return load_onnx(exported)
        if backend == "onnx":
            raise ImgclsError(f"{run} has no current ONNX export; write one with 'imgcls export {run}'")
    import torch

    from imgcls.engine.inference import TorchClassifier, inference_precision
    from imgcls.engine.inference_setting import InferenceSetting

    loaded = run if isinstance(run, LoadedModel) else load(run)
    decided = InferenceSetting.of_plan(loaded.plan)
    channels_last = decided is not None and decided.channels_last and precision == "auto"
    if channels_last:
        loaded.model.to(memory_format=torch.channels_last)
    return TorchClassifier(loaded.model, loaded.class_names, loaded.img_size, loaded.in_chans, loaded.interpolation,
                           loaded.mean, loaded.std, loaded.tta,
                           inference_precision(precision, auto_precision_override(),
                                               decided.precision if decided else ""),
                           loaded.temperature, loaded.threshold, loaded.threshold_rule, loaded.positive_index,
                           channels_last=channels_last)


def _current_export(run: str | Path) -> Path | None:
    """The run's ONNX export when it is of its current weights, else None."""
    folder = RunFolder(run)
    exported = folder.export_file("onnx")
    if not (exported.is_file() and folder.weights_file.is_file()):
        return None
    if exported.stat().st_mtime_ns < folder.weights_file.stat().st_mtime_ns:
        return None  # trained further since it was exported
    return exported


def predict(run: str | Path | LoadedModel, inputs: list[str | Path], topk: int = 5, batch_size: int = 64,
            precision: str = "auto", backend: str = "auto", threshold: str | None = None,
            abstain_below: str | None = None) -> list[dict[str, Any]]:
    """Top-k classes and the decision for every image file (folders are searched recursively); batched. `run` is
    a run folder, its best.safetensors, a LoadedModel, or an ONNX file from `imgcls export`; a run with a current
    ONNX export runs on onnxruntime without importing torch unless `backend` is torch (see classifier_for).

    The decision is the run's: the most probable class, or (two classes) the positive class from the run's chosen
    threshold on; `threshold` overrides it (argmax, a number, or a rule chosen on the run's validation
    predictions), `abstain_below` answers "uncertain" below a confidence (a number, or auto / accuracy=X: the
    lowest confidence at which the run's validation predictions reach that accuracy).

    Returns one dict per file: {"path", "decision", "predictions": [{"class", "probability"}, ...], "rule"?}
    or {"path", "error"}.
    """
    if topk < 1:
        raise ImgclsError(f"--topk must be at least 1, got {topk}")
    files = image_files(inputs)
    classifier = classifier_for(run, precision, backend)
    rule = decision_rule(run, classifier, threshold, abstain_below)
    return _predict_batches(files, classifier, topk, batch_size, rule)


def decision_rule(run: str | Path | LoadedModel, classifier: Classifier, threshold: str | None = None,
                  abstain_below: str | None = None) -> DecisionRule:
    """How `classifier`'s probabilities become answers: its run's threshold unless `threshold` says otherwise,
    and the abstention confidence `abstain_below` asks for (see predict)."""
    class_names = tuple(classifier.class_names)
    chosen, how = classifier.threshold, classifier.threshold_rule
    if threshold is not None:
        parsed = parse_threshold(threshold)
        if parsed is not None and len(class_names) != 2:
            raise ImgclsError(f"--threshold is for two classes; this model has {len(class_names)} (per-class "
                              f"thresholds are out of scope)")
        if parsed is None:
            chosen, how = None, ""
        elif parsed.kind == "fixed":
            chosen, how = parsed.target, "given"
        else:
            probs, labels = _validation_predictions(run, f"--threshold {parsed}")
            positive = classifier.positive_class
            chosen = choose_threshold(probs[:, positive], labels == positive, parsed)
            how = f"{parsed} on validation"
    abstain, abstain_how = None, ""
    parsed_abstain = parse_abstain(abstain_below)
    if parsed_abstain is not None and parsed_abstain[0] == "confidence":
        abstain, abstain_how = parsed_abstain[1], "given"
    elif parsed_abstain is not None:
        probs, labels = _validation_predictions(run, "--abstain-below auto")
        abstain, coverage, accuracy = confidence_for_accuracy(probs, labels, parsed_abstain[1])
        abstain_how = (f"validation accuracy {accuracy:.3f} on the {coverage:.1%} it keeps, target "
                       f"{parsed_abstain[1]:g}")
    return DecisionRule(class_names, chosen, classifier.positive_class, how, abstain, abstain_how)


def _validation_predictions(run: str | Path | LoadedModel, asked: str) -> tuple[np.ndarray, np.ndarray]:
    """The run's saved (calibrated) validation probabilities and labels; a one-line error where there are none."""
    folder = run.run if isinstance(run, LoadedModel) else RunFolder(Path(run).parent if Path(run).is_file() else run)
    saved = load_split_predictions(folder).get("val") if folder is not None and folder.is_run() else None
    if saved is None:
        raise ImgclsError(f"{asked} is chosen on the run's validation predictions, and {run} has none; pass the run "
                          f"folder (trained with a validation split) or a number")
    return saved.probs, saved.labels


def _predict_batches(files: list[Path], classifier: Classifier, topk: int, batch_size: int,
                     rule: DecisionRule) -> list[dict[str, Any]]:
    """Decode `files` batch by batch at the classifier's input, rank its classes and decide."""
    results: list[dict[str, Any]] = [{"path": str(path)} for path in files]
    described = rule.describe()["decision"]
    for start in range(0, len(files), batch_size):
        images, positions, errors = decode_files(files[start:start + batch_size], classifier.img_size,
                                                 classifier.in_chans, classifier.interpolation)
        for position, reason in errors.items():
            results[start + position]["error"] = reason
        if positions:
            probabilities = classifier.probabilities(images)
            ranked = top_classes(probabilities, classifier.class_names, topk)
            for position, guesses, decision in zip(positions, ranked, rule.decide(probabilities)):
                results[start + position].update(decision=decision, predictions=guesses)
                if described != "argmax":
                    results[start + position]["rule"] = described
    return results
