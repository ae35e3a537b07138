"""The tutorial's recipe against the fast recipe, side by side, on this machine, in one run.

    python benchmarks/bench_recipes.py                          # ~10 min on 2 CPU cores: 180 s budget each
    python benchmarks/bench_recipes.py --budget-seconds 900     # the 15-minute training budget of the issue

For each recipe ("tutorial": the "seed" network with the tutorial preset; "fast": the "fast" preset, the
bundled model's recipe), in its own child process (so each peak-memory figure is its own):

1. train from scratch on the imported data set's train split for ``--budget-seconds`` of wall-clock time
   (the same budget for both; training stops after the batch that crosses it, mid-epoch if need be),
   with the recipe's own network, optimizer, learning rate, class weighting and tf.data augmentation.
   The learning rate follows the recipe's schedule over the budget: "cosine" decays with the elapsed
   fraction of the budget; "plateau" (the tutorial's) only acts at epoch ends on validation accuracy,
   so it is applied there and is a constant rate when no epoch ends within the budget;
2. training images/s (after ``--warmup`` untimed batches of graph tracing), seconds per epoch of the
   train split at that rate, peak resident memory of the process;
3. test accuracy and AUC reached: accuracy at threshold 0.5 and at the Youden threshold chosen on the
   validation split (never on test), and the AUC, on the test split (Kermany: 624 images);
4. inference milliseconds per image, batches of 32 and single images (``model(x, training=False)``,
   after a warm-up call), and Grad-CAM milliseconds per image (``cxr.explain.GradCam``);
5. the same inference figures for the bundled model (models/default/, column "bundled"; no training).

Prints one table with both recipes side by side and the command line. Writes nothing unless ``--json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))  # run as a script from anywhere: import cxr from this checkout


def _budget_callback(budget_seconds: float, warmup: int, base_learning_rate: float, schedule: str,
                     min_learning_rate: float):
    """A Keras callback: stops training once ``budget_seconds`` have passed since the first batch,
    follows a cosine learning rate over the budget when ``schedule`` is "cosine", and counts the
    images/s after ``warmup`` batches."""
    import keras

    class Budget(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.started = None
            self.timed_started = None
            self.batches = 0
            self.timed_batches = 0
            self.epochs_finished = 0

        def on_train_batch_begin(self, batch, logs=None):
            now = time.perf_counter()
            if self.started is None:
                self.started = now
            if schedule == "cosine":
                fraction = min(1.0, (now - self.started) / budget_seconds)
                alpha = min(1.0, min_learning_rate / base_learning_rate)
                rate = base_learning_rate * (alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * fraction)))
                self.model.optimizer.learning_rate.assign(rate)

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            self.batches += 1
            if self.batches == warmup:
                self.timed_started = now
            elif self.batches > warmup:
                self.timed_batches += 1
            if now - self.started >= budget_seconds:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            self.epochs_finished += 1

        @property
        def elapsed(self) -> float:
            return time.perf_counter() - self.started if self.started is not None else 0.0

    return Budget()


def _youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    from cxr.thresholds import choose_threshold

    return float(choose_threshold(labels, scores, rule="youden"))


def _milliseconds_per_image(function, images: np.ndarray, batch_size: int, repeats: int) -> float:
    """Median over ``repeats`` of the time per image to run ``function`` over ``images`` in batches."""
    function(images[:batch_size])  # warm-up: graph tracing, memory allocation
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(images), batch_size):
            function(images[start:start + batch_size])
        timings.append((time.perf_counter() - started) / len(images) * 1000)
    return float(np.median(timings))


def measure(recipe: str, dataset_name: str, budget_seconds: float, warmup: int, seed: int,
            inference_images: int, gradcam_images: int) -> dict:
    """Train ``recipe`` for ``budget_seconds``; return the figures of the table (one JSON-able dict)."""
    import resource

    import keras
    import tensorflow as tf

    from cxr import pipeline
    from cxr.config import preset
    from cxr.datasets import load_dataset
    from cxr.evaluation import roc_auc
    from cxr.explain import GradCam
    from cxr.models import build_model, compile_model, count_multiply_adds

    dataset = load_dataset(dataset_name)
    config = preset(recipe, image_size=int(dataset.image_size), seed=seed)
    arrays = pipeline.training_arrays(dataset, config)
    if "test" not in arrays:
        raise SystemExit(f"data set {dataset_name!r} has no test split; import one that has (Kermany does)")
    train_images, train_labels = arrays["train"]
    keras.utils.set_random_seed(seed)
    size = config.image_size
    model = build_model(config.model, (size, size, 1), dropout_rate=config.dropout_rate)
    # A float learning rate (a variable) so the budget callback can follow the schedule.
    compile_model(model, optimizer=config.optimizer, learning_rate=config.learning_rate)
    train_data = pipeline.make_dataset(train_images, train_labels, batch_size=config.batch_size, training=True,
                                       augmentation=pipeline.build_augmentation(config), seed=seed,
                                       weights=pipeline.class_weights(train_labels, config.class_weighting))
    validation_data = pipeline.make_dataset(*arrays["val"], batch_size=config.batch_size, training=False)
    budget = _budget_callback(budget_seconds, warmup, config.learning_rate, config.schedule,
                              config.min_learning_rate)
    callbacks = [budget]
    if config.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", patience=config.plateau_patience,
                                                           factor=config.plateau_factor,
                                                           min_lr=config.min_learning_rate))
    # Up to as many epochs as the budget allows; validation runs only when an epoch ends (plateau needs it)
    # and its time counts against the budget like any other part of the recipe.
    model.fit(train_data, validation_data=validation_data, epochs=500, callbacks=callbacks, verbose=0)
    training_seconds = budget.elapsed
    images_per_second = (budget.timed_batches * config.batch_size / (time.perf_counter() - budget.timed_started)
                         if budget.timed_started and budget.timed_batches else float("nan"))
    peak_training_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def scores(images: np.ndarray) -> np.ndarray:
        return model.predict(images[..., np.newaxis], batch_size=64, verbose=0).reshape(-1)

    val_scores = scores(arrays["val"][0])
    test_images, test_labels = arrays["test"]
    test_scores = scores(test_images)
    threshold = _youden_threshold(arrays["val"][1], val_scores)

    sample = test_images[:inference_images, ..., np.newaxis].astype(np.float32)

    def forward(batch: np.ndarray) -> None:
        model(tf.constant(batch), training=False).numpy()

    gradcam = GradCam(model)
    gradcam(test_images[0])  # warm-up
    started = time.perf_counter()
    for image in test_images[1:gradcam_images + 1]:
        gradcam(image)
    gradcam_ms = (time.perf_counter() - started) / gradcam_images * 1000
    return {
        "recipe": recipe, "network": config.model, "parameters": int(model.count_params()),
        "mega_multiply_adds": count_multiply_adds(model) / 1e6, "image_size": size,
        "train_images": int(len(train_images)), "batch_size": config.batch_size,
        "budget_seconds": budget_seconds, "training_seconds": training_seconds,
        "batches_trained": budget.batches, "epochs_trained": budget.batches * config.batch_size / len(train_images),
        "images_per_second": images_per_second,
        "seconds_per_epoch": len(train_images) / images_per_second,
        "peak_rss_mb": peak_training_mb,
        "test_n": int(len(test_labels)),
        "test_accuracy_at_0.5": float(np.mean((test_scores >= 0.5) == test_labels)),
        "validation_threshold": threshold,
        "test_accuracy_at_validation_threshold": float(np.mean((test_scores >= threshold) == test_labels)),
        "test_auc": float(roc_auc(test_labels, test_scores)),
        "validation_auc": float(roc_auc(arrays["val"][1], val_scores)),
        "inference_ms_batch32": _milliseconds_per_image(forward, sample, 32, repeats=3),
        "inference_ms_single": _milliseconds_per_image(forward, sample[:16], 1, repeats=3),
        "gradcam_ms": gradcam_ms,
    }


def measure_bundled(inference_images: int, gradcam_images: int, dataset_name: str) -> dict:
    """Inference and Grad-CAM times of the bundled model (models/default/), loaded as the app loads it."""
    import tensorflow as tf

    from cxr.datasets import load_dataset
    from cxr.explain import GradCam
    from cxr.models import count_multiply_adds
    from cxr.predict import Predictor

    predictor = Predictor.load("default")
    model = predictor.model
    images = load_dataset(dataset_name).images("test")
    sample = images[:inference_images, ..., np.newaxis].astype(np.float32)

    def forward(batch: np.ndarray) -> None:
        model(tf.constant(batch), training=False).numpy()

    gradcam = GradCam(model)
    gradcam(images[0])
    started = time.perf_counter()
    for image in images[1:gradcam_images + 1]:
        gradcam(image)
    nothing = float("nan")
    return {"recipe": "bundled", "network": model.name, "parameters": int(model.count_params()),
            "mega_multiply_adds": count_multiply_adds(model) / 1e6, **{key: nothing for key in TRAINING_KEYS},
            "inference_ms_batch32": _milliseconds_per_image(forward, sample, 32, repeats=3),
            "inference_ms_single": _milliseconds_per_image(forward, sample[:16], 1, repeats=3),
            "gradcam_ms": (time.perf_counter() - started) / gradcam_images * 1000}


TRAINING_KEYS = ("images_per_second", "seconds_per_epoch", "peak_rss_mb", "training_seconds", "epochs_trained",
                 "validation_auc", "test_accuracy_at_0.5", "test_accuracy_at_validation_threshold", "test_auc")

ROWS = [
    ("network", "network", "{}"),
    ("parameters", "parameters", "{:,.0f}"),
    ("multiply-adds / image (M)", "mega_multiply_adds", "{:,.1f}"),
    ("training images / s", "images_per_second", "{:,.1f}"),
    ("seconds / epoch (train split)", "seconds_per_epoch", "{:,.0f}"),
    ("peak RSS while training (MB)", "peak_rss_mb", "{:,.0f}"),
    ("training wall-clock (s)", "training_seconds", "{:,.0f}"),
    ("epochs trained in the budget", "epochs_trained", "{:,.2f}"),
    ("validation AUC", "validation_auc", "{:.3f}"),
    ("test accuracy, threshold 0.5", "test_accuracy_at_0.5", "{:.3f}"),
    ("test accuracy, validation threshold", "test_accuracy_at_validation_threshold", "{:.3f}"),
    ("test AUC", "test_auc", "{:.3f}"),
    ("inference ms / image, batch 32", "inference_ms_batch32", "{:,.2f}"),
    ("inference ms / image, single", "inference_ms_single", "{:,.2f}"),
    ("Grad-CAM ms / image", "gradcam_ms", "{:,.1f}"),
]


def format_table(results: list[dict]) -> str:
    """The side-by-side table (text) of ``measure`` results."""
    names = [result["recipe"] for result in results]
    lines = [f"{'':38}" + "".join(f"{name:>14}" for name in names)]
    def cell(value, number: str) -> str:
        missing = isinstance(value, float) and math.isnan(value)
        return f"{'—' if missing else number.format(value):>14}"

    for title, key, number in ROWS:
        lines.append(f"{title:38}" + "".join(cell(result[key], number) for result in results))
    trained = [result for result in results if result["recipe"] != "bundled"]
    if len(trained) == 2 and all(result["images_per_second"] > 0 for result in trained):
        first, second = trained
        lines.append(f"=> {second['recipe']} trains {second['images_per_second'] / first['images_per_second']:.1f}x "
                     f"more images per second and infers "
                     f"{first['inference_ms_batch32'] / second['inference_ms_batch32']:.1f}x faster (batch 32) "
                     f"than {first['recipe']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="chest_xray-150",
                        help="an imported data set with train, val and test splits (python -m cxr data import)")
    parser.add_argument("--budget-seconds", type=float, default=180.0, help="training wall-clock per recipe")
    parser.add_argument("--recipes", default="tutorial,fast", help="comma-separated presets")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first (graph tracing)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--inference-images", type=int, default=64, help="test images timed for inference")
    parser.add_argument("--gradcam-images", type=int, default=8, help="test images timed for Grad-CAM")
    parser.add_argument("--no-bundled", action="store_true",
                        help="skip the inference timing of the bundled model (models/default/)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # child mode: measure one recipe
    args = parser.parse_args(argv)

    if args.worker == "bundled":
        print(json.dumps(measure_bundled(args.inference_images, args.gradcam_images, args.dataset)))
        return 0
    if args.worker:
        print(json.dumps(measure(args.worker, args.dataset, args.budget_seconds, args.warmup, args.seed,
                                 args.inference_images, args.gradcam_images)))
        return 0

    recipes = [name.strip() for name in args.recipes.split(",") if name.strip()]
    from cxr.config import PRESETS

    unknown = [name for name in recipes if name not in PRESETS]
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; choose from {', '.join(PRESETS)}")
    command = "python benchmarks/bench_recipes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {platform.machine()}, {os.cpu_count()} CPU cores, Python "
          f"{platform.python_version()}; data set {args.dataset}; {args.budget_seconds:.0f} s of training per "
          f"recipe; each recipe in its own process", flush=True)
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                       PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    results = []
    workers = recipes + ([] if args.no_bundled or not (PROJECT_ROOT / "models" / "default" / "model.keras").is_file()
                         else ["bundled"])
    for recipe in workers:
        child = [sys.executable, str(Path(__file__).resolve()), "--worker", recipe, "--dataset", args.dataset,
                 "--budget-seconds", str(args.budget_seconds), "--warmup", str(args.warmup), "--seed", str(args.seed),
                 "--inference-images", str(args.inference_images), "--gradcam-images", str(args.gradcam_images)]
        done = subprocess.run(child, capture_output=True, text=True, env=environment, check=False)
        if done.returncode != 0:
            print(f"recipe {recipe!r} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            return 1
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {recipe}: done ({time.perf_counter() - started:.0f} s so far)", flush=True)
    print(format_table(results))
    print(f"command: {command.strip()}  ({time.perf_counter() - started:.0f} s in all)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
