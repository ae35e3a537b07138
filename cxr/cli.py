"""The command line: ``python -m cxr <command> …``.

Each command lives in ``cxr/commands/<name>.py`` and exposes ``register(subparsers)``, which adds its
parser and sets ``handler`` (a function ``args -> int`` exit status). Bad input (a ``CxrError`` or a
``ValueError`` from settings) is printed as one clear line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order shown in --help.
COMMAND_MODULES = ("data", "train", "runs", "stop", "evaluate", "predict", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cxr",
        description="Train and use chest X-ray classifiers (normal vs pneumonia). Not a diagnostic device.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"cxr.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"cxr.commands.{name}":
                continue  # command not written yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ValueError as error:  # CxrError and settings errors: a message meant for a person
        print(f"error: {error}", file=sys.stderr)
        return 2
