"""Load test: many sessions uploading and predicting at once, on one server process, while a training runs.

    python benchmarks/load_test.py                      # 20 sessions, 60 s, a tiny training running meanwhile
    python benchmarks/load_test.py --sessions 40 --seconds 120 --model default   # the bundled model
    python benchmarks/load_test.py --model RUN_ID --no-training
    python benchmarks/load_test.py --model default --explain gradcam --no-training   # what a demo server does

What it drives: the prediction path behind the Predict page. Each session is a thread that, like a browser
session, sends the bytes of its own upload (a PNG) to ONE ``cxr.predict.Predictor`` shared by all threads (as
``st.cache_resource`` shares it across sessions) and reads back its result. Everything is local: no socket is
opened. Each session's image is distinct and its expected answer is computed first, single-threaded, by a
separate Predictor, so a lost or mixed-up result (a session receiving another session's answer or name) is
detected; errors are counted. Memory is the resident set (RSS) of this process, the "server": after warm-up
(start), sampled every 0.2 s (peak) and at the end.

Runs in a temporary CXR_HOME (nothing is left behind). Prints one table; ``--json`` prints the figures as JSON.
The shortened version (20 sessions, a few seconds) runs in tests/test_load.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL_SIZE = 24  # the built-in test model's input size: small, so the figures measure the serving path


def brightness_model(size: int = MODEL_SIZE):
    """P(pneumonia) = sigmoid(10 * mean / 255 - 5): a tiny model whose every answer differs with the image's
    brightness, so a mixed-up answer is visible. Input ``(n, size, size, 1)`` raw pixels, cxr's layer names."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(1, 1, use_bias=False, name="conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    logit = layers.Dense(1, name="logit")(x)
    model = keras.Model(inputs, layers.Activation("sigmoid", name="probability")(logit))
    model.get_layer("conv").set_weights([np.ones((1, 1, 1, 1), np.float32)])
    model.get_layer("logit").set_weights([np.array([[10.0]], np.float32), np.array([-5.0], np.float32)])
    return model


def session_images(count: int, *, side: int = 128) -> list[bytes]:
    """``count`` distinct PNG uploads (side x side gray): noise around a different brightness for each session,
    so each has its own answer."""
    import cv2

    generator = np.random.default_rng(0)
    uploads = []
    for index in range(count):
        level = 20 + 215 * index / max(count - 1, 1)
        image = np.clip(generator.normal(level, 12, (side, side)), 0, 255).astype(np.uint8)
        ok, encoded = cv2.imencode(".png", image)
        if not ok:
            raise RuntimeError("OpenCV could not encode a PNG")
        uploads.append(encoded.tobytes())
    return uploads


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


@dataclass
class LoadReport:
    """What a load test measured. Latencies in milliseconds, memory in MiB."""

    sessions: int
    seconds: float
    requests: int = 0
    errors: int = 0
    mixed_up: int = 0
    latency_median_ms: float = 0.0
    latency_p95_ms: float = 0.0
    latency_max_ms: float = 0.0
    requests_per_second: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_peak_mb: float = 0.0
    requests_per_session: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the first few errors and mix-ups, for the reader
    training: dict | None = None

    def table(self) -> str:
        rows = [("sessions", self.sessions), ("duration (s)", f"{self.seconds:.1f}"), ("requests", self.requests),
                ("requests/s", f"{self.requests_per_second:.1f}"), ("errors", self.errors),
                ("mixed-up or lost results", self.mixed_up),
                ("latency median (ms)", f"{self.latency_median_ms:.1f}"),
                ("latency p95 (ms)", f"{self.latency_p95_ms:.1f}"), ("latency max (ms)", f"{self.latency_max_ms:.1f}"),
                ("requests per session (min-max)",
                 f"{min(self.requests_per_session, default=0)}-{max(self.requests_per_session, default=0)}"),
                ("server RSS at start (MiB)", f"{self.rss_start_mb:.0f}"),
                ("server RSS at end (MiB)", f"{self.rss_end_mb:.0f}"),
                ("server RSS peak (MiB)", f"{self.rss_peak_mb:.0f}")]
        if self.training is not None:
            rows.append(("training during the test", json.dumps(self.training)))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows + [("problems", p) for p in self.problems])


def run_load(predictor, uploads: list[bytes], expected: list[float], *, seconds: float,
             tolerance: float = 1e-6, explain: str | None = None) -> LoadReport:
    """Run ``len(uploads)`` sessions against the shared ``predictor`` for ``seconds``.

    Session ``i`` sends ``uploads[i]`` named ``session-i-k.png`` (k = its request number) again and again, and
    checks that the answer carries its own name and ``expected[i]`` (within ``tolerance``). All sessions start
    together (a barrier), so the very first requests race too."""
    sessions = len(uploads)
    report = LoadReport(sessions=sessions, seconds=seconds, requests_per_session=[0] * sessions)
    latencies: list[list[float]] = [[] for _ in range(sessions)]
    lock = threading.Lock()
    start_line = threading.Barrier(sessions + 1)
    stop_sampling = threading.Event()
    peak = [rss_mb()]
    report.rss_start_mb = peak[0]

    def problem(text: str) -> None:
        with lock:
            if len(report.problems) < 5:
                report.problems.append(text)

    def sample_memory() -> None:
        while not stop_sampling.wait(0.2):
            peak[0] = max(peak[0], rss_mb())

    def session(index: int) -> None:
        start_line.wait()
        request = 0
        while time.perf_counter() < deadline:
            name = f"session-{index}-{request}.png"
            began = time.perf_counter()
            try:
                results = predictor.predict([uploads[index]], names=[name], explain=explain)
            except Exception as error:  # noqa: BLE001 - counted and reported, the session goes on
                with lock:
                    report.errors += 1
                problem(f"{name}: {type(error).__name__}: {error}")
                request += 1
                continue
            latencies[index].append(time.perf_counter() - began)
            request += 1
            if len(results) != 1 or results[0].error is not None:
                with lock:
                    report.errors += 1
                problem(f"{name}: {results[0].error if results else 'no result'}")
                continue
            result = results[0]
            if result.name != name or abs(result.probability - expected[index]) > tolerance:
                with lock:
                    report.mixed_up += 1
                problem(f"{name}: got {result.name!r} p={result.probability:.6f}, expected p={expected[index]:.6f}")
        report.requests_per_session[index] = request

    threads = [threading.Thread(target=session, args=(index,), name=f"session-{index}") for index in range(sessions)]
    sampler = threading.Thread(target=sample_memory, daemon=True)
    for thread in threads:
        thread.start()
    sampler.start()
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    start_line.wait()
    for thread in threads:
        thread.join()
    stop_sampling.set()
    sampler.join()
    elapsed = time.perf_counter() - started
    flat = sorted(value * 1000 for values in latencies for value in values)
    report.seconds = elapsed
    report.requests = sum(report.requests_per_session)
    report.requests_per_second = report.requests / elapsed if elapsed else 0.0
    if flat:
        report.latency_median_ms = statistics.median(flat)
        report.latency_p95_ms = flat[min(len(flat) - 1, int(round(0.95 * (len(flat) - 1))))]
        report.latency_max_ms = flat[-1]
    report.rss_end_mb = rss_mb()
    report.rss_peak_mb = max(peak[0], report.rss_end_mb)
    return report


def expected_answers(make_predictor, uploads: list[bytes]) -> list[float]:
    """Each upload's answer from a separate predictor, one image at a time (the reference)."""
    reference = make_predictor()
    return [reference.predict([data], names=["reference.png"])[0].probability for data in uploads]


def start_background_training(seconds: float) -> str:
    """Start a tiny training child process (cxr.jobs) long enough to run during the test; returns its run id."""
    from cxr import jobs
    from cxr.config import TrainingConfig
    from cxr.datasets import Dataset

    generator = np.random.default_rng(1)
    count = 96
    images = np.clip(generator.normal(100, 30, (count, 32, 32)), 0, 255).astype(np.uint8)
    labels = np.arange(count) % 2
    images[labels == 1, 8:24, 8:24] = 230
    # The child process reads its data set from disk (the run's config names the file).
    path = Path(os.environ.get("CXR_HOME", tempfile.gettempdir())) / "load-test.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, train_images=images, train_labels=labels, test_images=images[:16], test_labels=labels[:16])
    dataset = Dataset.from_npz(path)
    # Enough epochs to outlast the test on two busy cores; it is stopped at the end.
    config = TrainingConfig(model="fast", image_size=32, epochs=max(3, int(seconds)), batch_size=8,
                            schedule="constant", early_stopping=False, validation_fraction=0.25, seed=1)
    return jobs.start_training(dataset, config, max_concurrent=0)


def wait_training_running(run_id: str, timeout: float = 180.0) -> None:
    from cxr import runs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = runs.read_status(run_id)
        if status["state"] == "running" and (status.get("batch") or 0) >= 1:
            return
        if status["state"] not in ("queued", "running"):
            raise RuntimeError(f"the background training ended early: {status}")
        time.sleep(0.2)
    raise RuntimeError("the background training did not start in time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--model", default=None,
                        help="'default' (bundled), a run id or a .keras file; default: a built-in 24 px test model")
    parser.add_argument("--no-training", action="store_true", help="do not run a training during the test")
    parser.add_argument("--explain", choices=("gradcam", "shap"), default=None,
                        help="a heat map with each prediction, as the Predict page makes (Grad-CAM there by default)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    # A temporary home unless the model is a run id (found in the real one); the background run goes there too.
    by_run_id = args.model not in (None, "default") and not args.model.endswith(".keras")
    home = tempfile.mkdtemp(prefix="cxr-load-")
    if not by_run_id:
        os.environ["CXR_HOME"] = home
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from cxr import jobs, runs
    from cxr.predict import Predictor

    if args.model is None:
        model_path = Path(home) / "load-model.keras"
        brightness_model().save(model_path)

        def make_predictor():
            return Predictor.load(model_path)
    else:
        def make_predictor():
            return Predictor.load(args.model)

    uploads = session_images(args.sessions)
    expected = expected_answers(make_predictor, uploads)
    if len(set(np.round(expected, 6))) < len(expected):
        print("note: some sessions share an answer with this model; mix-ups between them cannot be seen",
              file=sys.stderr)
    run_id = None
    if not args.no_training:
        run_id = start_background_training(args.seconds)
        wait_training_running(run_id)
    shared = make_predictor()  # fresh and cold, as st.cache_resource hands it to the first sessions
    report = run_load(shared, uploads, expected, seconds=args.seconds, explain=args.explain)
    if run_id is not None:
        status = runs.read_status(run_id)
        report.training = {"run": run_id, "state_at_end": status["state"], "epoch": status.get("epoch"),
                           "epochs_done": len(runs.read_history(run_id))}
        if status["state"] in ("queued", "running"):
            jobs.stop(run_id)
            jobs.wait(run_id, timeout=120)
    print(json.dumps(asdict(report), indent=2) if args.json else report.table())
    return 0 if report.errors == 0 and report.mixed_up == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
