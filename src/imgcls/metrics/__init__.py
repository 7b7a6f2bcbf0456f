"""Metrics: every number of a split (torchmetrics, `classification.compute_metrics`) with bootstrap confidence
intervals (`bootstrap`). The package itself holds only their names (`names`), so that a table of them can be
printed without importing torch."""

from imgcls.metrics.names import (
    IMBALANCED,
    LOWER_IS_BETTER,
    METRIC_LABELS,
    RESAMPLES,
    SCALAR_ORDER,
    imbalance_ratio,
    is_better,
    metric_order,
    positive_index,
)

__all__ = ["IMBALANCED", "LOWER_IS_BETTER", "METRIC_LABELS", "RESAMPLES", "SCALAR_ORDER", "imbalance_ratio",
           "is_better", "metric_order", "positive_index"]
