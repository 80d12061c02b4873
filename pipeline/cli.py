"""Kept for pre-commit hooks installed by earlier versions (`python -m pipeline.cli`): see pipeline.guard.hook."""

import sys

from pipeline.guard.hook import main

if __name__ == "__main__":
    sys.exit(main())
