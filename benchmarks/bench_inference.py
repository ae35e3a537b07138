"""Inference speed of the bundled model against the tutorial's network, side by side in one process.

    python benchmarks/bench_inference.py                 # batches of 64, 7 rounds
    python benchmarks/bench_inference.py --rounds 15 --batch-size 32

Times ``model(x, training=False)`` (a compiled call, traced once, untimed warm-up) on the same batch of
images for: the bundled model (``models/default/model.keras``), the tutorial's "seed" network
(``cxr.models.build_model("seed", input_shape=(150, 150, 1))``, random weights: speed only), and the
bundled model's population check (ImageNet Lite0 features at 224 px plus the Mahalanobis distance, the
extra time of every prediction). The rounds alternate between the models so that a busy machine slows
them alike; each figure is the median over rounds, in ms per image, and the ratios are within one round.
Targets (issue 12 / 11): bundled ≤ 10 ms per image at batch 64 and ≥ 2x faster than the seed network;
the population check ≤ 15 ms extra per image at batch 32.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()

    import keras

    from cxr import models
    from cxr.population_detector import load_detector
    from cxr.tensorflow_loader import tensorflow as tf

    bundled = keras.models.load_model(ROOT / "models" / "default" / "model.keras", safe_mode=True)
    size = int(bundled.input.shape[1])
    seed = models.build_model("seed", input_shape=(size, size, 1))
    detector = load_detector(ROOT / "models" / "default")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (arguments.batch_size, size, size), dtype=np.uint8)
    batch = tf.constant(images[..., None].astype(np.float32))

    def compiled(model):
        function = tf.function(lambda x: model(x, training=False), autograph=False)
        function(batch)  # trace and warm up, untimed
        return lambda: function(batch).numpy()

    contenders = {"bundled model": compiled(bundled), "seed network (tutorial)": compiled(seed)}
    if detector is not None:
        detector.image_scores(images)  # warm up: graph, weights
        contenders["population check (extra)"] = lambda: detector.image_scores(images)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(arguments.rounds):
        for name, call in contenders.items():
            started = time.perf_counter()
            call()
            times[name].append(1000 * (time.perf_counter() - started) / arguments.batch_size)
    load = os.getloadavg()[0]
    print(f"batch {arguments.batch_size}, {arguments.rounds} rounds, {size} px, {os.cpu_count()} CPUs, "
          f"load average {load:.1f} at the end")
    for name, values in times.items():
        print(f"{name:28s} {statistics.median(values):7.2f} ms/image (min {min(values):.2f}, max {max(values):.2f})")
    ratios = [seed_ms / bundled_ms for seed_ms, bundled_ms in zip(times["seed network (tutorial)"],
                                                                  times["bundled model"], strict=True)]
    print(f"seed / bundled: median {statistics.median(ratios):.1f}x faster (per round: "
          f"{', '.join(f'{ratio:.1f}' for ratio in ratios)})")


if __name__ == "__main__":
    main()
