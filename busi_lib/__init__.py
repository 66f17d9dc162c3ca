"""busi_lib: the library behind the BUSI deep-learning notebooks.

One job per file; the folders import only downward (``tests/test_layout.py`` checks it), in the order README.md's
layout section draws them. ``import busi_lib`` loads nothing, so ``busi --help`` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
