"""Run profiles: which weights, sizes and epochs each model gets."""

import pytest

from busi_lib.training.profiles import STUDY_MODELS, resolve_arch, settings_for


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
