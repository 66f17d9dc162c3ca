"""The one place that silences library warnings a student cannot act on.

One **narrow** filter per entry of :data:`KNOWN_WARNINGS`, never a blanket ``ignore``; the policy: docs/library.md.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

__all__ = ["KNOWN_WARNINGS", "KnownWarning", "quiet_known_warnings"]


@dataclass(frozen=True)
class KnownWarning:
    """One library warning that is safe to hide, and why."""

    category: type[Warning]
    message: str  # regular expression matched at the start of the warning text
    module: str  # regular expression matched against the module that raises it (warnings' ``module=``)
    source: str  # where it comes from
    why: str  # why hiding it is safe
    example: str  # the text as the library writes it (tests check that ``message`` matches it)


KNOWN_WARNINGS: tuple[KnownWarning, ...] = (
    KnownWarning(
        FutureWarning,
        r"`torch\.jit\.script` is (deprecated|not supported in Python 3\.14)",
        r"torch\.jit\._script$",
        source="`import fastai` (fastai/layers.py decorates its swish/mish helpers with @torch.jit.script at "
        "import time); torch >= 2.9 warns that TorchScript is deprecated.",
        why="it fires while fastai is imported, before any student code runs; busi_lib uses neither those "
        "helpers nor TorchScript, and torch <= 2.14 (our cap) still scripts them correctly.",
        example="`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`.",
    ),
    KnownWarning(
        UserWarning,
        r"(A new version of Albumentations is available|Error fetching version info|"
        r"Failed to check for updates)",
        r"albumentations(\.|$)",
        source="`import albumentations` asks PyPI for a newer release (albumentations/check_version.py) and "
        "warns when there is one, or when it is offline.",
        why="the version is pinned by the project, not by the student; the check is also switched off "
        "(NO_ALBUMENTATIONS_UPDATE=1, below), this filter only covers an import that happened earlier.",
        example="A new version of Albumentations is available: '2.1.0' (you have '2.0.8'). Upgrade using: "
        "pip install -U albumentations.",
    ),
)


def quiet_known_warnings() -> tuple[KnownWarning, ...]:
    """Install a narrow ``ignore`` filter for each entry of :data:`KNOWN_WARNINGS`; return the entries. Call it before
    the libraries are imported (``start()`` does); calling it again changes nothing."""
    # albumentations' update check is a network request at import time (2 s when offline); its documented
    # switch turns it off. setdefault: a user who wants the check can still set the variable to 0.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    for w in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=w.message, category=w.category, module=w.module)
    return KNOWN_WARNINGS
