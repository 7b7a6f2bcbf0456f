"""Temperature scaling (Guo et al. 2017): one scalar T divides the logits, fitted on held-out data by minimising
the negative log-likelihood. It changes no prediction (the argmax of z/T is the argmax of z) and makes the top
probability mean what it says: label smoothing, for one, leaves a model under-confident (Müller et al. 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

MIN_IMAGES = 100  # held-out images below which T is too noisy to fit: it stays 1, with a warning
ECE_BINS = 15  # as the metrics' ECE


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T) on `labels`.

    The NLL is convex in 1/T, so L-BFGS on log T finds the one minimum; it is optimised in float64 on the whole
    split at once (a few milliseconds for 10,000 images).
    """
    logits, labels = logits.detach().double(), labels.long()
    log_temperature = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=1.0, max_iter=200, tolerance_grad=1e-10,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_temperature.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(log_temperature.detach().clamp(-5.0, 5.0).exp())


def log_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """Logits that give `probs` back under softmax (log-probabilities: softmax ignores a per-row constant, so
    scaling them by 1/T is temperature scaling of the model's own logits)."""
    return probs.double().clamp_min(1e-45).log()


def calibration_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """NLL (the loss) and ECE of softmax(logits) on `labels`."""
    logits, labels = logits.double(), labels.long()
    probs = logits.softmax(dim=1)
    ece = multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=ECE_BINS, norm="l1")
    return {"loss": float(F.cross_entropy(logits, labels)), "ece": float(ece)}
