"""``python -m cxr`` entry point (see cxr/cli.py)."""

import sys

from cxr.cli import main

if __name__ == "__main__":
    sys.exit(main())
