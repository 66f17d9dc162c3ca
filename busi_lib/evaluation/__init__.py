"""Metrics and intervals, inference, calibration, ensembles and AdaBN, the baselines, and the study's reference
numbers."""
