"""Losses, the fastai Learner and the training run (and its plain PyTorch loop), hardware (precision, loaders),
several processes."""
