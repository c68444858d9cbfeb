"""Evaluators: ``education.KTMetrics`` (``kt_metrics.py``), exact AUC and accuracy of next-answer predictions."""
