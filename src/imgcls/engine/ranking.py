"""Class probabilities to ranked answers: what predict prints and serve returns (numpy only, no torch: an
ONNX export answers without it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def top_classes(probabilities: Any, class_names: list[str], topk: int) -> list[list[dict[str, Any]]]:
    """For each row of (N, K) probabilities, its `topk` classes, most probable first (ties by class order)."""
    probabilities = np.asarray(probabilities)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :min(topk, len(class_names))]
    return [[{"class": class_names[int(index)], "probability": float(row_probs[index])} for index in row]
            for row, row_probs in zip(order, probabilities)]


UNCERTAIN = "uncertain"  # the decision when the top probability is below the abstention confidence


@dataclass(frozen=True)
class DecisionRule:
    """How a row of probabilities becomes one answer: the most probable class; with a threshold (two classes)
    the positive class from that probability on; "uncertain" (refer to a person) when the top probability is
    below `abstain_below`."""

    class_names: tuple[str, ...]
    threshold: float | None = None
    positive_class: int = 1
    threshold_rule: str = ""  # how the threshold was chosen, said with every answer
    abstain_below: float | None = None
    abstain_rule: str = ""  # how the abstention confidence was chosen

    def decide(self, probabilities: Any) -> list[str]:
        """The decision for each row of (N, K) probabilities."""
        probabilities = np.asarray(probabilities)
        chosen = probabilities.argmax(1)
        if self.threshold is not None:
            chosen = np.where(probabilities[:, self.positive_class] >= self.threshold, self.positive_class,
                              1 - self.positive_class)
        names = [self.class_names[int(index)] for index in chosen]
        if self.abstain_below is not None:
            confident = probabilities.max(1) >= self.abstain_below
            names = [name if keep else UNCERTAIN for name, keep in zip(names, confident)]
        return names

    def describe(self) -> dict[str, Any]:
        """The rule in words and numbers, returned with predictions so that each answer says how it was made."""
        described: dict[str, Any] = {"decision": "argmax"}
        if self.threshold is not None:
            described = {"decision": f"{self.class_names[self.positive_class]} when its probability >= "
                                     f"{self.threshold:.4f}" + (f" ({self.threshold_rule})" if self.threshold_rule
                                                                else ""),
                         "threshold": self.threshold, "positive_class": self.class_names[self.positive_class]}
        if self.abstain_below is not None:
            described["abstain_below"] = self.abstain_below
            described["decision"] += f"; {UNCERTAIN} below confidence {self.abstain_below:.4f}" + (
                f" ({self.abstain_rule})" if self.abstain_rule else "")
        return described
