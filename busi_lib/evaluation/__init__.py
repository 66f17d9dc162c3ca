"""Metrics and intervals, inference, ensembles, calibration, external validation and its report, the bench,
speed, and the study's reference numbers."""
