"""One progress display for every long loop outside training: fastprogress's bar, the one fastai shows while it
trains. Drawn in a terminal or a notebook only: into a log file, a bar's redraws would pile up."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from fastprogress.fastprogress import IN_NOTEBOOK, progress_bar


def progress(items: Iterable, show: bool = True, comment: str = "", total: int | None = None) -> Iterable:
    """``items`` with a progress bar (``total``: their number, for an iterator without a length), or ``items``
    unchanged when ``show`` is off or no terminal or notebook is there to draw it."""
    if not show or not (IN_NOTEBOOK or sys.stdout.isatty()) or (total is None and not hasattr(items, "__len__")):
        return items
    bar = progress_bar(items, total=total, leave=False)
    bar.comment = comment
    return bar
