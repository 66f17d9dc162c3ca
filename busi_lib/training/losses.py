"""Losses for the three tasks, as fastai-ready callables (with fastai's ``activation`` and ``decodes``).
Why ``pos_weight``, soft Dice and the default multitask weights: docs/library.md."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (pooled, so an empty mask leaves it defined), on sigmoid probabilities."""
    prob = torch.sigmoid(logits).flatten()
    target = target.float().flatten()
    inter = (prob * target).sum()
    return 1 - (2 * inter + eps) / (prob.sum() + target.sum() + eps)


def _flat_logit(pred: torch.Tensor) -> torch.Tensor:
    return pred.reshape(pred.shape[0], -1)[:, 0] if pred.ndim > 1 else pred


class LossBase(nn.Module):
    """What fastai asks of a loss besides its value: the activation and the decoded calls of a prediction."""

    def activation(self, out: torch.Tensor | tuple) -> torch.Tensor | tuple:
        """Probabilities: the sigmoid of each output."""
        if isinstance(out, (tuple, list)):
            return tuple(torch.sigmoid(o) for o in out)
        return torch.sigmoid(out)

    def decodes(self, out: torch.Tensor | tuple) -> torch.Tensor | tuple:
        """Calls: each probability at 0.5."""
        if isinstance(out, (tuple, list)):
            return tuple((o > 0.5).float() for o in out)
        return (out > 0.5).float()


class ClassificationLoss(LossBase):
    """BCEWithLogits on the class logit; ``pos_weight`` balances benign and malignant."""

    def __init__(self, pos_weight: float | None = None):
        super().__init__()
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)) if pos_weight is not None else None)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean loss of a batch: ``pred`` the class logits (B,) or (B, 1), ``target`` the labels (B,) in {0, 1}."""
        logit = _flat_logit(pred)
        pw = None if self.pos_weight is None else self.pos_weight.to(logit.device)
        return F.binary_cross_entropy_with_logits(logit, target.float().to(logit.device), pos_weight=pw)


class SegmentationLoss(LossBase):
    """BCEWithLogits on every pixel, plus ``dice_weight`` x soft Dice loss."""

    def __init__(self, dice_weight: float = 1.0):
        super().__init__()
        self.dice_weight = dice_weight

    def forward(self, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The loss of a batch: ``pred`` the mask logits (B, 1, H, W), ``mask`` the true masks in {0, 1}."""
        mask = mask.float().reshape(pred.shape)
        loss = F.binary_cross_entropy_with_logits(pred, mask)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(pred, mask)
        return loss


class MultitaskLoss(LossBase):
    """``w_cls * L_cls + w_seg * L_seg`` for a model returning ``(class_logit, mask_logits)``."""

    def __init__(self, w_cls: float = 0.4, w_seg: float = 0.6, pos_weight: float | None = None,
                 dice_weight: float = 1.0):
        super().__init__()
        if w_cls < 0 or w_seg < 0 or w_cls + w_seg == 0:
            raise ValueError("loss weights must be non-negative and not both zero")
        self.w_cls, self.w_seg = w_cls, w_seg
        self.cls_loss = ClassificationLoss(pos_weight)
        self.seg_loss = SegmentationLoss(dice_weight)
        self.last_parts: dict[str, float] = {}

    def forward(self, pred: tuple[torch.Tensor, torch.Tensor], y_cls: torch.Tensor,
                y_mask: torch.Tensor) -> torch.Tensor:
        """The weighted loss of a batch; ``pred`` is the model's ``(class_logit, mask_logits)``."""
        cls_logit, mask_logits = pred
        l_cls = self.cls_loss(cls_logit, y_cls)
        l_seg = self.seg_loss(mask_logits, y_mask)
        self.last_parts = {"cls_loss": l_cls.detach(), "seg_loss": l_seg.detach()}
        return self.w_cls * l_cls + self.w_seg * l_seg


def loss_for(task: str, *, pos_weight: float | None = None, w_cls: float = 0.4, w_seg: float = 0.6,
             dice_weight: float = 1.0) -> nn.Module:
    """The loss of a task (``classify``, ``segment``, ``multitask``)."""
    if task == "classify":
        return ClassificationLoss(pos_weight)
    if task == "segment":
        return SegmentationLoss(dice_weight)
    if task == "multitask":
        return MultitaskLoss(w_cls, w_seg, pos_weight, dice_weight)
    raise ValueError(f"unknown task {task!r}")
