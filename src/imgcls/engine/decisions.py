"""What a run decides from its validation predictions after training: the temperature that calibrates its
probabilities and, for two classes, the threshold of its operating point; and the metrics they give on every
split. Works on probabilities alone (log-probabilities are logits up to a per-row constant), so the linear probe,
the training loop and `imgcls calibrate` share it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from imgcls.console import warn
from imgcls.metrics import RESAMPLES
from imgcls.metrics.calibration import MIN_IMAGES, calibration_scores, fit_temperature, log_probabilities
from imgcls.metrics.classification import compute_metrics
from imgcls.metrics.operating_point import ThresholdRule, at_threshold, choose_threshold, threshold_table

Predictions = dict[str, tuple[torch.Tensor, torch.Tensor]]  # split -> (probabilities (N, K), labels (N,))


@dataclass
class Decisions:
    """The temperature (1: none) and, for two classes, the threshold on the positive class's probability."""

    temperature: float = 1.0
    threshold: float | None = None
    threshold_rule: str = ""
    positive_class: int = 1
    fitted_on: str = "val"  # the predictions both were fitted on (val, or out-of-fold)
    record: dict[str, Any] = field(default_factory=dict)  # decisions.json: how each was fitted, before and after

    def weights_metadata(self, class_names: list[str]) -> dict[str, Any]:
        """What the weights file carries so that every later use applies the same decisions."""
        return {"temperature": self.temperature, "threshold": self.threshold, "threshold_rule": self.threshold_rule,
                "positive_class": class_names[self.positive_class]}


def fit_decisions(predictions: Predictions, calibrate: bool, rule: ThresholdRule | None,
                  positive_class: int, fitted_on: str = "val") -> Decisions:
    """Fit the temperature on predictions[fitted_on] (unless too few images: then a warning and T = 1) and
    choose the threshold there on the calibrated probabilities."""
    decisions = Decisions(positive_class=positive_class, fitted_on=fitted_on)
    held_out = predictions.get(fitted_on)
    count = 0 if held_out is None else int(held_out[1].numel())
    if calibrate and count < MIN_IMAGES:
        warn(f"no calibration: the {fitted_on} split has {count} images and a temperature needs at least "
             f"{MIN_IMAGES} held-out images to be fitted; give a larger --val-split or pass --no-calibrate")
    elif calibrate and held_out is not None:
        logits = log_probabilities(held_out[0])
        decisions.temperature = fit_temperature(logits, held_out[1])
        decisions.record["calibration"] = {
            "temperature": decisions.temperature, "fitted_on": fitted_on, "images": count,
            "before": calibration_scores(logits, held_out[1]),
            "after": calibration_scores(logits / decisions.temperature, held_out[1])}
    if rule is not None:
        if held_out is None:
            raise ValueError("a threshold is chosen on held-out predictions")  # the workflow checks this first
        scores, positive = _positive_scores(calibrated(held_out[0], decisions.temperature), held_out[1], positive_class)
        decisions.threshold, decisions.threshold_rule = choose_threshold(scores, positive, rule), str(rule)
        decisions.record["threshold"] = {"threshold": decisions.threshold, "rule": str(rule),
                                         "chosen_on": fitted_on, "positive_class": positive_class}
    decisions.record["temperature"] = decisions.temperature
    return decisions


def calibrated(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) from softmax(logits), float32."""
    if temperature == 1.0:
        return probs
    return (log_probabilities(probs) / temperature).softmax(dim=1).float()


def apply_decisions(predictions: Predictions, decisions: Decisions, class_names: list[str],
                    seed: int = 0) -> tuple[Predictions, dict[str, dict[str, Any]]]:
    """The calibrated predictions and every split's metrics on them (intervals on held-out splits), with the
    ECE and loss before calibration and, given a threshold, the operating point and threshold table."""
    new_predictions: Predictions = {}
    metrics: dict[str, dict[str, Any]] = {}
    for split, (probs, labels) in predictions.items():
        new_predictions[split] = (calibrated(probs, decisions.temperature), labels)
        metrics[split] = split_metrics(probs, labels, decisions, class_names, split, seed)
    return new_predictions, metrics


def split_metrics(probs: torch.Tensor, labels: torch.Tensor, decisions: Decisions, class_names: list[str],
                  split: str, seed: int = 0) -> dict[str, Any]:
    """One split's metrics under `decisions`, from its uncalibrated probabilities."""
    logits = log_probabilities(probs)
    metrics = compute_metrics(logits / decisions.temperature, labels, class_names, decisions.positive_class,
                              resamples=0 if split == "train" else RESAMPLES, seed=seed)
    if decisions.temperature != 1.0:
        before = calibration_scores(logits, labels)
        metrics["ece_uncalibrated"], metrics["loss_uncalibrated"] = {"value": before["ece"]}, {"value": before["loss"]}
        metrics["calibration"] = {"temperature": decisions.temperature}
    if decisions.threshold is not None and split != "train":
        scores, positive = _positive_scores(calibrated(probs, decisions.temperature), labels, decisions.positive_class)
        metrics["operating_point"] = {"rule": decisions.threshold_rule, "chosen_on": decisions.fitted_on,
                                      **at_threshold(scores, positive, decisions.threshold)}
        metrics["threshold_table"] = threshold_table(scores, positive, decisions.threshold)
    return metrics


def _positive_scores(probs: torch.Tensor, labels: torch.Tensor, positive_class: int):
    return probs[:, positive_class].double().numpy(), (labels == positive_class).numpy()
