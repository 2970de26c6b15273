"""``python -m latentode``: the same as the ``latentode`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
