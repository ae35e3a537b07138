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
from cxr import runs
from cxr.errors import RunError

# Command-line flag -> TrainingConfig field, for the plain numeric and choice settings.
FLAGS = {
    "model": "model", "image_size": "image_size", "epochs": "epochs", "batch_size": "batch_size",
    "optimizer": "optimizer", "learning_rate": "learning_rate", "schedule": "schedule",
    "class_weighting": "class_weighting", "dropout": "dropout_rate", "patience": "early_stopping_patience",
    "rotation": "rotation_degrees", "zoom": "zoom", "width_shift": "width_shift",
    "height_shift": "height_shift", "validation_fraction": "validation_fraction", "strategy": "strategy",
    "max_batches": "max_batches_per_epoch", "weights": "weights", "brightness": "brightness",
    "contrast": "contrast", "photometric": "photometric", "random_crop": "random_crop",
    "label_smoothing": "label_smoothing",
}


def _seed(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model on an imported data set",
        description="Train a model on DATASET (an imported data set's name or folder, or a MedMNIST-style "
                    ".npz), writing a run directory under $CXR_HOME/runs. Unset options come from --preset.")
    parser.add_argument("dataset", nargs="?", help="data set name or path (not needed with --resume/--run)")
    parser.add_argument("--preset", choices=tuple(settings.PRESETS), default="fast",
                        help="starting settings: 'tutorial' (the seed recipe) or 'fast' (default)")
    parser.add_argument("--model", help="a name of cxr.models.model_names(), e.g. fast or efficientnet_lite0")
    parser.add_argument("--image-size", type=int, help="default: the data set's image size")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--optimizer", choices=settings.OPTIMIZERS)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--schedule", choices=settings.SCHEDULES)
    parser.add_argument("--class-weighting", choices=settings.CLASS_WEIGHTINGS)
    parser.add_argument("--dropout", type=float)
    parser.add_argument("--early-stopping", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    parser.add_argument("--rotation", type=float, help="augmentation: rotation in degrees (0 = off)")
    parser.add_argument("--zoom", type=float, help="augmentation: zoom fraction (0 = off)")
    parser.add_argument("--width-shift", type=float, help="augmentation: width shift fraction (0 = off)")
    parser.add_argument("--height-shift", type=float, help="augmentation: height shift fraction (0 = off)")
    parser.add_argument("--horizontal-flip", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--brightness", type=float,
                        help="augmentation: ± fraction of full white added to every pixel (0 = off)")
    parser.add_argument("--contrast", type=float,
                        help="augmentation: contrast scaled by 1 ± this around the image mean (0 = off)")
    parser.add_argument("--photometric", type=float,
                        help="augmentation: gamma, blur/sharpen, noise, background level at random strengths "
                             "up to this (0-1; 0 = off)")
    parser.add_argument("--random-crop", type=float,
                        help="augmentation: random resized crops removing up to this fraction of the area (0 = off)")
    parser.add_argument("--label-smoothing", type=float, help="targets 0/1 become s/2 and 1 - s/2 (0 = off)")
    parser.add_argument("--no-augmentation", action="store_true", help="turn every augmentation off")
    parser.add_argument("--validation-fraction", type=float)
    parser.add_argument("--seed", type=_seed, default=argparse.SUPPRESS, help="integer, or 'none' for random")
    parser.add_argument("--strategy", choices=settings.STRATEGIES,
                        help="tf.distribute strategy; multi-worker reads the cluster from TF_CONFIG")
    parser.add_argument("--max-batches", type=int, help="batches per epoch at most (smoke tests)")
    parser.add_argument("--weights", help="transfer backbones: imagenet, none, or a weights file path")
    parser.add_argument("--run-dir", type=Path, help="write the run here instead of $CXR_HOME/runs/<new id>")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # a run created by cxr.jobs: train its config
    parser.add_argument("--resume", metavar="RUN", help="continue a stopped or interrupted run")
    parser.add_argument("--max-concurrent", type=int, default=1,
                        help="runs of one data set training at once; others wait queued (0 = no limit)")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    parser.set_defaults(handler=run_train)


def config_from_args(args: argparse.Namespace, image_size: int | None) -> settings.TrainingConfig:
    """The preset with the options given on the command line applied (validated by TrainingConfig)."""
    overrides = {field: getattr(args, flag) for flag, field in FLAGS.items() if getattr(args, flag) is not None}
    if "image_size" not in overrides and image_size is not None:
        overrides["image_size"] = int(image_size)
    if args.early_stopping is not None:
        overrides["early_stopping"] = args.early_stopping
    if args.horizontal_flip is not None:
        overrides["horizontal_flip"] = args.horizontal_flip
    if args.no_augmentation:
        overrides.update(rotation_degrees=0.0, zoom=0.0, width_shift=0.0, height_shift=0.0,
                         horizontal_flip=False, brightness=0.0, contrast=0.0, photometric=0.0, random_crop=0.0)
    if hasattr(args, "seed"):
        overrides["seed"] = args.seed
    return settings.preset(args.preset, **overrides)


def run_train(args: argparse.Namespace) -> int:
    from cxr import jobs, training

    # SIGTERM (cxr.jobs.stop's fallback, a scheduler, `kill`) finishes the batch and saves.
    training.install_stop_signal_handler()
    resume = args.resume is not None
    if resume or args.run:
        run_dir = runs.run_path(args.resume or args.run)
        stored = runs.read_config(run_dir)
        config = settings.TrainingConfig.from_dict(stored["training"])
        dataset_ref = stored.get("dataset_path") or stored["dataset"]
        if resume:
            state = runs.read_status(run_dir)["state"]
            if state not in jobs.RESUMABLE_STATES + ("queued",):
                raise RunError(f"Run {run_dir.name} is {state}; only a stopped, interrupted or failed run "
                               f"can be resumed.")
        dataset = None
    else:
        if not args.dataset:
            raise RunError("Name the data set to train on: `python -m cxr train DATASET` (see "
                           "`python -m cxr data --help`), or continue a run with --resume RUN.")
        dataset = training.resolve_dataset(args.dataset)
        config = config_from_args(args, dataset.image_size)
        dataset_ref = args.dataset
        run_dir = None
        if training.is_chief(config.strategy):
            run_dir = runs.new_run(dataset, config, run_dir=args.run_dir)
            print(f"run {run_dir.name}: {run_dir}", flush=True)

    chief = training.is_chief(config.strategy)
    # Multi-worker tasks must start together; they never wait in the queue.
    if chief and config.strategy != "multi-worker":
        if not jobs.wait_for_slot(run_dir, args.max_concurrent, should_stop=training.stop_signal_received):
            print(f"run {run_dir.name}: cancelled while queued", flush=True)
            return 0
    if dataset is None:
        dataset = training.resolve_dataset(dataset_ref)
    result = training.train(dataset, config, run_dir if run_dir is not None else Path("."), resume=resume,
                            verbose=2 if args.quiet else "auto")
    if chief:
        print(f"run {run_dir.name}: {result.state} after {result.epochs_done} epoch(s); {run_dir}", flush=True)
        if result.state == "stopped":
            print(f"resume with: python -m cxr train --resume {run_dir.name}", file=sys.stderr)
    return 0
