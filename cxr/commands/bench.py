"""``cxr bench NAME [ARGS…]``: run one of the benchmark scripts in ``benchmarks/`` with this Python.

The scripts live beside the package (``benchmarks/bench_<name>.py``, ``benchmarks/load_test.py``), so
they exist in a source checkout or an editable install; elsewhere the command says so. ARGS go to the
script unchanged (``cxr bench data -- --help`` shows its own options); the exit status is the script's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from cxr import paths
from cxr.errors import CxrError

BENCHMARKS_DIR = paths.PROJECT_ROOT / "benchmarks"
# Command name -> script; fixed so that `cxr bench` never runs an arbitrary file.
SCRIPTS = {"data": "bench_data.py", "training": "bench_training.py", "recipes": "bench_recipes.py",
           "load": "load_test.py"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="run a benchmark script from benchmarks/",
        description="Run benchmarks/<script> with this Python: data = bench_data.py (import time and memory), "
                    "training = bench_training.py (throughput), recipes = bench_recipes.py (tutorial vs fast), "
                    "load = load_test.py (the app under concurrent users). Arguments after NAME go to the script.")
    parser.add_argument("name", choices=tuple(SCRIPTS), help="which benchmark")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="passed to the script unchanged")
    parser.set_defaults(handler=run_bench)


def script_path(name: str) -> Path:
    """The script of benchmark ``name``; ``CxrError`` when the checkout has no benchmarks folder."""
    path = BENCHMARKS_DIR / SCRIPTS[name]
    if not path.is_file():
        raise CxrError(f"The benchmark script {str(path)!r} is not here: benchmarks/ ships with the source, not "
                       f"with a non-editable install. Run `pip install -e .` from a clone of the project.")
    return path


def run_bench(args: argparse.Namespace) -> int:
    script_args = list(args.script_args)
    if script_args[:1] == ["--"]:
        script_args = script_args[1:]
    command = [sys.executable, str(script_path(args.name)), *script_args]
    print(f"running: {' '.join(command)}", file=sys.stderr, flush=True)
    return subprocess.run(command, check=False).returncode
