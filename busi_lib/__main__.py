"""``python -m busi_lib ...`` is the ``busi`` command."""

from busi_lib.apps.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
