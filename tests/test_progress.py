"""The one progress display: a bar in a terminal or a notebook, nothing drawn into a pipe or a log."""

import sys

from fastprogress.fastprogress import ConsoleProgressBar

from busi_lib.progress import progress


def test_a_bar_only_where_one_can_be_drawn(monkeypatch, capsys):
    items = list(range(5))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert progress(items) is items  # a pipe: the items themselves
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    bar = progress(items, comment="counting")
    assert isinstance(bar, ConsoleProgressBar) and list(bar) == items
    assert progress(items, show=False) is items
    chunks = iter(items)
    assert progress(chunks) is chunks  # no length and no total: nothing to draw a bar against
    assert list(progress(iter(items), total=5)) == items
