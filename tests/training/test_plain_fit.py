"""The plain PyTorch loop of notebook 02 is the loop fastai's Learner runs: the same batches, the same weights."""

import copy
from functools import partial

import pytest
import torch
from fastai.optimizer import SGD

from busi_lib.config import TrainConfig
from busi_lib.models.networks import CustomCNN
from busi_lib.training.learners import make_learner, plain_fit, prepare_data
from busi_lib.training.losses import ClassificationLoss


def test_plain_loop_trains_exactly_like_fastai(synthetic_dir, tmp_path):
    cfg = TrainConfig(arch="custom_cnn", data=str(synthetic_dir), out=str(tmp_path), image_size=32, batch_size=8,
                      seed=0)
    _, _, dls = prepare_data(cfg)
    loss_func = ClassificationLoss(pos_weight=dls.pos_weight)
    torch.manual_seed(0)
    start = CustomCNN()
    shuffle = copy.deepcopy(dls.train.rng)  # fastai's loader shuffles with its own generator

    ours = copy.deepcopy(start)
    torch.manual_seed(1)  # dropout
    log = plain_fit(ours, dls, loss_func, torch.optim.SGD(ours.parameters(), lr=0.05), epochs=1)

    dls.train.rng = copy.deepcopy(shuffle)
    theirs = copy.deepcopy(start)
    learn = make_learner(dls, theirs, loss_func, tmp_path, opt_func=partial(SGD, mom=0.0, wd=0.0))
    torch.manual_seed(1)
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 0.05)

    assert list(log.columns) == ["epoch", "train_loss", "valid_loss"] and len(log) == 1
    changed = [not torch.equal(a, b) for a, b in zip(start.state_dict().values(), ours.state_dict().values())]
    assert any(changed)  # the loop trained
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name
    assert log["valid_loss"][0] == pytest.approx(learn.recorder.values[-1][1], abs=1e-5)  # fastai's valid_loss
