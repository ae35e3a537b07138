"""``python -m cxr train DATASET [options]``: train a model in this process, writing a run directory.

Also the child process that ``cxr.jobs`` starts: ``--run RUN_ID`` trains a run already created (its
config.json), ``--resume RUN`` continues a stopped or interrupted one. Either way the process first
waits its turn in the per-data-set queue (``--max-concurrent``), then trains with Keras' progress bar.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cxr import config as settings
from cxr.commands.config_flags import add_config_flags, overrides_from_args
from cxr.errors import RunError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model on an imported data set",
        description="Train a model on DATASET (an imported data set's name or folder, or a MedMNIST-style "
                    ".npz), writing a run directory under $CXR_HOME/runs. Unset options come from --preset.")
    parser.add_argument("dataset", nargs="?", help="data set name or path (not needed with --resume/--run)")
    parser.add_argument("--preset", choices=tuple(settings.PRESETS), default="fast",
                        help="starting settings: 'tutorial' (the seed recipe) or 'fast' (default)")
    add_config_flags(parser, settings.TrainingConfig, title="settings (TrainingConfig fields; unset ones come "
                                                            "from --preset)")
    parser.add_argument("--no-augmentation", action="store_true", help="turn every augmentation off")
    parser.add_argument("--run-dir", type=Path, help="write the run here instead of $CXR_HOME/runs/<new id>")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # a run created by cxr.jobs: train its config
    parser.add_argument("--resume", metavar="RUN", help="continue a stopped or interrupted run")
    parser.add_argument("--max-concurrent", type=int, default=1,
                        help="runs of one data set training at once; others wait queued (0 = no limit)")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    parser.set_defaults(handler=run_train)


def config_from_args(args: argparse.Namespace, image_size: int | None) -> settings.TrainingConfig:
    """The preset with the options given on the command line applied (validated by TrainingConfig)."""
    overrides = overrides_from_args(args, settings.TrainingConfig)
    if "image_size" not in overrides and image_size is not None:
        overrides["image_size"] = int(image_size)
    if args.no_augmentation:
        overrides.update(rotation_degrees=0.0, zoom=0.0, width_shift=0.0, height_shift=0.0,
                         horizontal_flip=False, brightness=0.0, contrast=0.0, photometric=0.0, random_crop=0.0,
                         mixup=0.0)
    return settings.preset(args.preset, **overrides)


def _stored_run(run_id: str, *, resume: bool) -> tuple[Path, settings.TrainingConfig, str]:
    """(run folder, its settings, its data set's path or name) of a run created before (``--run``, ``--resume``);
    ``RunError`` when a run to resume is not stopped, interrupted, failed or queued."""
    from cxr import jobs, runs

    run_dir = runs.run_path(run_id)
    stored = runs.read_config(run_dir)
    if resume:
        state = runs.read_status(run_dir)["state"]
        if state not in jobs.RESUMABLE_STATES + ("queued",):
            raise RunError(f"Run {run_dir.name} is {state}; only a stopped, interrupted or failed run "
                           f"can be resumed.")
    dataset_ref = stored.get("dataset_path") or stored["dataset"]
    return run_dir, settings.TrainingConfig.from_dict(stored["training"]), dataset_ref


def run_train(args: argparse.Namespace) -> int:
    from cxr import stop_requests

    # SIGTERM (cxr.jobs.stop's fallback, a scheduler, `kill`) finishes the batch and saves; the process's
    # own handler comes back when the command returns (it may be a test run or a notebook, not `cxr`).
    with stop_requests.stop_signal_handler():
        return _train_command(args)


def _train_command(args: argparse.Namespace) -> int:
    from cxr import distribution, jobs, runs, stop_requests, training
    from cxr.datasets import load_dataset
    from cxr.tensorflow_loader import import_tensorflow

    resume = args.resume is not None
    if resume or args.run:
        run_dir, config, dataset_ref = _stored_run(args.resume or args.run, resume=resume)
        dataset = None
    else:
        if not args.dataset:
            raise RunError("Name the data set to train on: `python -m cxr train DATASET` (see "
                           "`python -m cxr data --help`), or continue a run with --resume RUN.")
        dataset = load_dataset(args.dataset)
        config = config_from_args(args, dataset.image_size)
        dataset_ref = args.dataset
        run_dir = None
        if distribution.is_chief(config.strategy):
            run_dir = runs.new_run(dataset, config, run_dir=args.run_dir)
            print(f"run {run_dir.name}: {run_dir}", flush=True)

    chief = distribution.is_chief(config.strategy)
    # Multi-worker tasks must start together; they never wait in the queue.
    if chief and config.strategy != "multi-worker":
        if not jobs.wait_for_slot(run_dir, args.max_concurrent, should_stop=stop_requests.stop_signal_received):
            print(f"run {run_dir.name}: cancelled while queued", flush=True)
            return 0
    if dataset is None:
        dataset = load_dataset(dataset_ref)
    # Only now, after the queue: a queued run must not hold TensorFlow's memory while it waits. Imported
    # here, before cxr.training touches Keras, so TensorFlow's start-up lines are held back.
    import_tensorflow()
    result = training.train(dataset, config, run_dir if run_dir is not None else Path("."), resume=resume,
                            verbose=2 if args.quiet else "auto")
    if chief:
        print(f"run {run_dir.name}: {result.state} after {result.epochs_done} epoch(s); {run_dir}", flush=True)
        if result.state == "stopped":
            print(f"resume with: python -m cxr train --resume {run_dir.name}", file=sys.stderr)
    return 0
