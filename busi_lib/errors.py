"""The library's one exception type for bad input.

Every error about a file or folder names the path and the reason, so a student
who meets it knows which file to look at and what is wrong with it.
"""

from __future__ import annotations

from pathlib import Path


class BusiDataError(ValueError):
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
