"""``python -m cxr runs``: list training runs with their state and best metrics."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("runs", help="list training runs (state, progress, best metrics)",
                                   description="List the runs under $CXR_HOME/runs, newest first.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run_list)


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def run_list(args: argparse.Namespace) -> int:
    from cxr import jobs, runs

    summaries = runs.list_runs()
    if args.json:
        print(json.dumps([summary.to_dict() for summary in summaries], indent=2))
        return 0
    if not summaries:
        print("no runs yet; start one with `python -m cxr train DATASET`")
        return 0
    header = f"{'run':<36} {'state':<12} {'epoch':>7} {'model':<18} {'dataset':<16} {'val_auc':>7} {'val_acc':>7} "
    print(header + f"{'test_acc':>8}")
    for summary in summaries:
        state = summary.state
        if state == "queued":
            position = jobs.queue_position(summary.run_id)
            state = f"queued #{position}" if position else state
        progress = f"{summary.epoch or 0}/{summary.epochs or '?'}"
        print(f"{summary.run_id:<36} {state:<12} {progress:>7} {summary.model:<18} {summary.dataset[:16]:<16} "
              f"{_number(summary.best_val_auc):>7} {_number(summary.best_val_accuracy):>7} "
              f"{_number(summary.test_accuracy):>8}")
    return 0
