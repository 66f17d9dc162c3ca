"""busi_lib.ui.quiet: known library warnings are hidden narrowly, and nothing else is."""

import os
import subprocess
import sys
import warnings

import pytest

from busi_lib.ui.quiet import KNOWN_WARNINGS, quiet_known_warnings

# The imports a lesson notebook makes (the whole stack behind busi_lib).
STACK = (
    "import fastai.vision.all, albumentations, timm, segmentation_models_pytorch, pytorch_grad_cam, "
    "busi_lib.training.learners, busi_lib.ui.widgets"
)


def _stderr_of(code: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("NO_ALBUMENTATIONS_UPDATE", None)
    env.pop("PYTHONWARNINGS", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stderr


@pytest.mark.slow
def test_stack_imports_silently_after_quiet_known_warnings():
    # torch still warns when fastai's layers call @torch.jit.script at import (so this test can fail; checked here
    # in this process, where torch is already imported, instead of importing fastai again in another) ...
    import torch

    def swish(x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.jit.script(swish)
    loud = [w for w in caught if issubclass(w.category, FutureWarning) and "torch.jit.script" in str(w.message)]
    assert loud and all(w.filename.replace("\\", "/").endswith("torch/jit/_script.py") for w in loud)
    # ... and with the filters, importing the whole stack in a fresh process writes nothing at all on stderr.
    quiet = _stderr_of("from busi_lib.ui.quiet import quiet_known_warnings; quiet_known_warnings(); " + STACK)
    assert quiet == ""


def _shown(message: str, category, module: str) -> bool:
    """Whether a warning with this text, category and raising module gets through the current filters."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn_explicit(
            message, category, filename=module.replace(".", "/") + ".py", lineno=1, module=module, registry={}
        )
    return bool(caught)


@pytest.mark.parametrize("known", KNOWN_WARNINGS, ids=lambda k: k.category.__name__ + ":" + k.module)
def test_each_filter_hides_its_warning_and_nothing_next_to_it(known):
    module = known.module.replace("\\", "").rstrip("$").split("(")[0].rstrip(".")  # a module name the regex matches
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert _shown(known.example, known.category, module)  # visible before
        quiet_known_warnings()
        assert not _shown(known.example, known.category, module)
        # Narrow: the same text from our own code, another warning from the same module, or the same text
        # as another category all still show.
        assert _shown(known.example, known.category, "busi_lib.training.learners")
        assert _shown("something else went wrong", known.category, module)
        other = DeprecationWarning if known.category is not DeprecationWarning else UserWarning
        assert _shown(known.example, other, module)


def test_no_blanket_filter_and_idempotent(monkeypatch):
    monkeypatch.delenv("NO_ALBUMENTATIONS_UPDATE", raising=False)
    with warnings.catch_warnings():
        before = len(warnings.filters)
        entries = quiet_known_warnings()
        added = warnings.filters[: len(warnings.filters) - before]
        assert len(added) == len(entries) == len(KNOWN_WARNINGS)
        for action, message, category, module, _ in added:
            assert action == "ignore" and message is not None and module is not None
            assert category is not Warning
        quiet_known_warnings()
        assert len(warnings.filters) == before + len(entries)
    assert os.environ["NO_ALBUMENTATIONS_UPDATE"] == "1"  # the update check itself is off
