"""One module per command-line command; each exposes ``register(subparsers)`` (see cxr/cli.py)."""
