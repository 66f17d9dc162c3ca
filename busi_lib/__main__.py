"""``python -m busi_lib ...`` is the ``busi`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
