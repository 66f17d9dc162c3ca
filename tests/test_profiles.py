"""Run profiles: which weights, sizes and epochs each model gets."""

import pytest

from busi_lib.profiles import STUDY_MODELS, resolve_arch, settings_for


def test_cpu_and_smoke_transfer_the_packaged_weights():
    for profile in ("smoke", "cpu"):
        mt = settings_for(profile, "multitask")
        assert mt["encoder"] == "tf_efficientnet_lite0" and mt["pretrained"] is True
        assert settings_for(profile, "uresnet")["pretrained"] is True
        # weights that only the torchvision / timm caches hold: from scratch here, so a fresh machine runs
        for arch in ("resnet50", "vgg16_bn", "transformer", "fcn"):
            assert settings_for(profile, arch)["pretrained"] is False, (profile, arch)
    assert settings_for("cpu", "multitask")["epochs"] == 12
    gpu = settings_for("gpu", "resnet50")
    assert gpu["pretrained"] is True and settings_for("gpu", "multitask")["encoder"] == "resnet50"


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_the_two_efficientnets_differ_in_their_weights_only(profile):
    pre, scratch = settings_for(profile, "efficientnet_lite0"), settings_for(profile, "efficientnet_lite0_scratch")
    assert pre["arch"] == scratch["arch"] == "tf_efficientnet_lite0"
    assert pre.pop("pretrained") is True and scratch.pop("pretrained") is False
    assert pre == scratch
    assert resolve_arch("efficientnet_lite0_scratch", profile) == "tf_efficientnet_lite0"
    assert {"efficientnet_lite0", "efficientnet_lite0_scratch"} <= set(STUDY_MODELS)


def test_explicit_settings_win_and_none_keeps_the_profile():
    assert settings_for("cpu", "efficientnet_lite0_scratch", pretrained=True)["pretrained"] is True
    assert settings_for("cpu", "resnet50", pretrained=None)["pretrained"] is False
    assert settings_for("cpu", "multitask", encoder="resnet18")["encoder"] == "resnet18"


def test_a_schedule_set_for_the_pair_is_the_same_for_both_weights():
    from busi_lib.config import TrainConfig
    from busi_lib.training.learners import stages

    kw = dict(arch="tf_efficientnet_lite0", epochs=12, freeze_epochs=1, lr_mult=10.0)
    pre, scratch = stages(TrainConfig(**kw, pretrained=True), 2e-3), stages(TrainConfig(**kw, pretrained=False), 2e-3)
    assert [(m, e) for m, e, _ in pre] == [("freeze", 1), ("unfreeze", 12)]
    assert pre[1][2]["lr_max"] == slice(2e-4, 2e-3) and repr(pre) == repr(scratch)
    # left unset, a pretrained body keeps fastai's fine_tune and a from-scratch one trains end to end
    assert len(stages(TrainConfig(arch="tf_efficientnet_lite0", pretrained=True), 2e-3)) == 2
    assert stages(TrainConfig(arch="tf_efficientnet_lite0", pretrained=False), 2e-3) == [(None, 10, {"lr_max": 2e-3})]


def test_the_mask_loss_ablation_is_the_multitask_model_with_w_seg_0():
    on, off = settings_for("cpu", "multitask"), settings_for("cpu", "multitask_no_seg")
    assert off.pop("w_seg") == 0 and off == on
