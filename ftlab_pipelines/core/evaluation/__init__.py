"""Inference, metrics and thresholds, baselines, generation metrics, plots."""
