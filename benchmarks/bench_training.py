"""Training throughput and peak memory of the tutorial's "seed" network against the "fast" one.

    python benchmarks/bench_training.py --data ../shared/data/chest_xray --batches 20

Decodes a sample of the train split at --image-size (default 150, the tutorial's) as uint8, then
measures each model in its own child process (so each peak-memory figure is its own): the same
tf.data pipeline and augmentation as ``cxr.training``, a few warm-up batches (graph tracing), then
--batches timed training batches of --batch-size. Prints one table with both models side by side and
their ratio. Nothing is written except a temporary .npy of the decoded sample.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
KERMANY_TRAIN_IMAGES = 5216 - 522  # the train split less a 10 % validation carve


def decode_sample(data: Path, image_size: int, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, s, s) uint8, labels (n,)) from ``data/train/{NORMAL,PNEUMONIA}``, about half each."""
    import cv2

    images, labels = [], []
    generator = np.random.default_rng(seed)
    for label, folder in enumerate(("NORMAL", "PNEUMONIA")):
        files = sorted((data / "train" / folder).glob("*.jpeg"))
        if not files:
            raise SystemExit(f"no JPEG files in {data / 'train' / folder}; expected the Kaggle chest_xray layout")
        for path in generator.choice(files, size=min(count // 2, len(files)), replace=False):
            pixels = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if pixels is None:
                continue
            images.append(cv2.resize(pixels, (image_size, image_size), interpolation=cv2.INTER_AREA))
            labels.append(label)
    return np.stack(images), np.array(labels)


def measure(model_name: str, sample: Path, batches: int, batch_size: int, warmup: int) -> dict:
    """Train ``model_name`` for ``warmup`` + ``batches`` batches; return throughput and memory."""
    import resource

    import keras

    from cxr.config import preset
    from cxr.models import build_model, compile_model, count_multiply_adds
    from cxr.pipeline import build_augmentation, make_dataset

    arrays = np.load(sample)
    images, labels = arrays["images"], arrays["labels"]
    size = images.shape[1]
    config = preset("tutorial" if model_name == "seed" else "fast", model=model_name, image_size=size,
                    batch_size=batch_size)
    keras.utils.set_random_seed(0)
    model = build_model(model_name, (size, size, 1), dropout_rate=config.dropout_rate)
    compile_model(model, optimizer=config.optimizer, learning_rate=config.learning_rate)
    dataset = make_dataset(images, labels, batch_size=batch_size, training=True, seed=0,
                           augmentation=build_augmentation(config)).repeat()
    model.fit(dataset, steps_per_epoch=warmup, epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(dataset, steps_per_epoch=batches, epochs=1, verbose=0)
    seconds = time.perf_counter() - started
    images_per_second = batches * batch_size / seconds
    return {"model": model_name, "parameters": model.count_params(),
            "mega_multiply_adds": count_multiply_adds(model) / 1e6,
            "images_per_second": images_per_second,
            "seconds_per_epoch": KERMANY_TRAIN_IMAGES / images_per_second,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "timed_batches": batches, "batch_size": batch_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data" / "chest_xray")
    parser.add_argument("--image-size", type=int, default=150)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first (graph tracing)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=640, help="images decoded for the sample")
    parser.add_argument("--models", default="seed,fast")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # child mode: measure one model
    parser.add_argument("--sample", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(measure(args.worker, args.sample, args.batches, args.batch_size, args.warmup)))
        return 0

    started = time.perf_counter()
    images, labels = decode_sample(args.data, args.image_size, args.images)
    print(f"decoded {len(images)} train images at {args.image_size} px in {time.perf_counter() - started:.1f} s; "
          f"{args.batches} timed batches of {args.batch_size} per model, {os.cpu_count()} CPU cores")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        sample = Path(folder) / "sample.npz"
        np.savez(sample, images=images, labels=labels)
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                           PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
        for name in args.models.split(","):
            command = [sys.executable, __file__, "--worker", name, "--sample", str(sample),
                       "--batches", str(args.batches), "--batch-size", str(args.batch_size),
                       "--warmup", str(args.warmup)]
            done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))

    rows = [("parameters", "parameters", "{:,.0f}"), ("multiply-adds / image (M)", "mega_multiply_adds", "{:,.1f}"),
            ("training images / s", "images_per_second", "{:,.1f}"),
            (f"seconds / epoch ({KERMANY_TRAIN_IMAGES} images)", "seconds_per_epoch", "{:,.0f}"),
            ("peak RSS (MB)", "peak_rss_mb", "{:,.0f}")]
    names = [result["model"] for result in results]
    ratio_title = f"{names[0]}/{names[-1]}" if len(results) == 2 else ""
    header = f"{'':34}" + "".join(f"{name:>14}" for name in names)
    print(header + (f"{'ratio ' + ratio_title:>18}" if ratio_title else ""))
    for title, key, number in rows:
        line = f"{title:34}" + "".join(f"{number.format(result[key]):>14}" for result in results)
        if ratio_title:
            line += f"{results[0][key] / results[-1][key]:>17.2f}x"
        print(line)
    if len(results) == 2:
        print(f"=> {names[-1]} trains {results[-1]['images_per_second'] / results[0]['images_per_second']:.1f}x "
              f"more images per second than {names[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
