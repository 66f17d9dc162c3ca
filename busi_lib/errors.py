"""The library's exceptions: every error a user can cause derives from :class:`BusiError`.

``busi`` prints any of them, and any ``ValueError`` (a bad value), as one ``busi: error: ...`` line and exits 2.
"""

from __future__ import annotations

from pathlib import Path


class BusiError(Exception):
    """The base of the library's errors (see the module docstring)."""


class BusiDataError(BusiError, ValueError):
    """Bad input (a missing folder, an unreadable image, a mask of the wrong size...): ``path`` is the offending
    file or folder (``None`` when there is no single one), ``reason`` what is wrong."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else Path(path)
        self.reason = reason
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{reason}")


class WeightsNotFoundError(BusiError, FileNotFoundError):
    """Pretrained weights are neither packaged, nor in the cache, nor downloadable; names where to put them."""


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
