"""The library's exception family: every error a user can cause derives from :class:`BusiError`.

=========================  ======================================================================
``BusiError``              the base: ``except BusiError`` catches every error below
``BusiDataError``          bad input: a missing folder, an unreadable image, a mask of the wrong
                           size... It names the file (``path``) and the reason (``reason``), so a
                           student who meets it knows which file to look at and what is wrong.
                           Also a ``ValueError``.
``WeightsNotFoundError``   pretrained weights that are neither packaged nor cached; the message
                           names the file and the folder to put it in. Also a ``FileNotFoundError``.
``NotebookFailed``         a lesson notebook of ``busi notebooks`` failed; names it and the cell.
                           Also a ``RuntimeError``.
=========================  ======================================================================

The ``busi`` command prints any of them as one ``busi: error: ...`` line and exits with 2. A function
given an argument it cannot use (a negative size, an unknown metric name) raises Python's own
``ValueError``, as numpy and scikit-learn do: that is a bug in the calling code, not bad input.
"""

from __future__ import annotations

from pathlib import Path


class BusiError(Exception):
    """The base of the library's errors (see the module docstring)."""


class BusiDataError(BusiError, ValueError):
    """Bad input: a missing folder, an unreadable image, a mask of the wrong size...

    Attributes
    ----------
    path : the offending file or folder (``None`` when there is no single one)
    reason : a short human-readable reason
    """

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else Path(path)
        self.reason = reason
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{reason}")


class WeightsNotFoundError(BusiError, FileNotFoundError):
    """Pretrained weights are neither packaged, nor in the cache, nor downloadable."""


class NotebookFailed(BusiError, RuntimeError):
    """A notebook of the batch failed; the message names it and the failing cell."""

    def __init__(self, notebook: str, cell: int | None, reason: str, output: Path | None = None, source: str = ""):
        self.notebook, self.cell, self.reason, self.output = notebook, cell, reason, output
        where = f"cell {cell}" if cell is not None else "an unknown cell"
        first = next((line.strip() for line in source.splitlines() if line.strip()), "")
        if first:
            where += f" ({first[:60]!r})"
        saved = f" (executed copy: {output})" if output else ""
        super().__init__(f"notebook {notebook} failed in {where}: {reason}{saved}")
