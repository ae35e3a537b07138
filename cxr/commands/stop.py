"""``python -m cxr stop RUN``: ask a training run to stop after its current batch (it stays resumable)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("stop", help="stop a training run after its current batch",
                                   description="Stop RUN (a run id or folder) after its current batch; it "
                                               "saves its last finished epoch and can be resumed with "
                                               "`python -m cxr train --resume RUN`. A queued run leaves the "
                                               "queue.")
    parser.add_argument("run", help="run id (see `python -m cxr runs`) or run folder")
    parser.add_argument("--wait", action="store_true", help="wait until the run has stopped")
    parser.set_defaults(handler=run_stop)


def run_stop(args: argparse.Namespace) -> int:
    from cxr import jobs, runs

    state = jobs.stop(args.run)
    print(f"run {runs.run_path(args.run).name}: {state}")
    if args.wait:
        status = jobs.wait(args.run)
        print(f"run {runs.run_path(args.run).name}: {status['state']} ({status.get('message') or ''})")
    return 0
