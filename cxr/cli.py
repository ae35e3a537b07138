"""The command line: ``cxr <command> …`` (or ``python -m cxr <command> …``).

Each command lives in ``cxr/commands/<name>.py`` (``runs`` in ``list_runs.py``, not to be confused with
``cxr/runs.py``) and exposes ``register(subparsers)``, which adds its
parser and sets ``handler`` (a function ``args -> int`` exit status). One convention for every command:
bad input (a ``CxrError``, a ``ValueError`` from settings, a mistyped option) is printed as one unindented
line ``error: …`` on stderr (what was received, what was expected, what to do), never as a traceback, and
the exit status is 2; 0 means every input got its result. TensorFlow's start-up lines are held back
unless ``--verbose`` (``cxr.tensorflow_loader``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order shown in --help.
COMMAND_MODULES = ("data", "train", "list_runs", "stop", "evaluate", "predict", "export", "bench")
USAGE_ERROR = 2


class Parser(argparse.ArgumentParser):
    """argparse with the project's error line: ``error: …`` then where to read the options."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        print(f"error: {message}. See `{self.prog} --help`.", file=sys.stderr)
        raise SystemExit(USAGE_ERROR)


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` on ``parser`` and on every sub-command below it (``cxr data import … --verbose``)."""
    # SUPPRESS: a sub-command's default must not overwrite `cxr --verbose COMMAND`.
    parser.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                        help="show TensorFlow's start-up and device messages")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_verbose(child)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="cxr",
        description="Train and use chest X-ray classifiers (normal vs pneumonia). Not a diagnostic device.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"cxr.commands.{name}").register(subparsers)
    _add_verbose(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # --help and usage errors end here with SystemExit (0 or 2)
    from cxr import tensorflow_loader

    if getattr(args, "verbose", False):
        tensorflow_loader.set_verbose(True)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return USAGE_ERROR
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ValueError as error:  # CxrError and settings errors: a message meant for a person
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except Exception:
        # A bug, not bad input: the traceback follows, and TensorFlow's held-back lines may explain it.
        if tensorflow_loader.captured_log():
            print(tensorflow_loader.captured_log(), end="", file=sys.stderr)
        raise
