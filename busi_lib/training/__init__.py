"""Losses, the fastai Learner, the training run (and its plain PyTorch loop), hardware, several processes."""
