"""Losses, the fastai Learner and the training run, profiles, hardware (precision, loaders), checkpoints,
several processes, and the saved-model folder."""
