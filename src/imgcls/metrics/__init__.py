"""Metrics: every number of a split (torchmetrics) with bootstrap confidence intervals."""

from imgcls.metrics.classification import (LOWER_IS_BETTER, METRIC_LABELS, SCALAR_ORDER, compute_metrics, is_better,
                                           positive_index)

__all__ = ["LOWER_IS_BETTER", "METRIC_LABELS", "SCALAR_ORDER", "compute_metrics", "is_better", "positive_index"]
