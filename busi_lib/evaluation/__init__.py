"""Metrics and intervals, inference, calibration, ensembles and AdaBN, the baselines, the study's reference numbers."""
