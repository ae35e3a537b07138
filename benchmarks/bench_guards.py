"""Speed and memory of the guards whose limits used to be asserted inside tests.

    python benchmarks/bench_guards.py                 # every figure
    python benchmarks/bench_guards.py --only bombs gradcam

Tests check what the guards do (a bomb is refused from its header, Grad-CAM gives a full-size map, junk
files are skipped, a queued run does not load TensorFlow); how fast and how small is measured here and
printed beside its target, so a slow or shared machine never fails the test suite:

- ``bombs``: seconds to refuse each decompression bomb of tests/test_imaging.py (PNG 30000², JPEG 60000²,
  BMP and TIFF 40000², DICOM 30000²), median of 5, and the peak traced allocation; target < 0.5 s.
- ``gradcam``: Grad-CAM seconds per image, steady state (after the first, tracing call), on the ``fast``
  network at 150 px; target < 1 s.
- ``junk``: importing a folder of 24 images among 1,500 text files and 500 text files named ``.png``;
  target < 60 s.
- ``queued``: resident memory of a training child that waits in the queue behind another run of the
  same data set; target < 250 MB (it must not import TensorFlow while it waits).

The load test (requests served in 8 s by 20 sessions, memory growth) is ``benchmarks/load_test.py``.
Runs in a temporary CXR_HOME; nothing is left behind.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the bomb builders and tiny data sets are the tests' own

SECTIONS = ("bombs", "gradcam", "junk", "queued")


def bombs() -> list[tuple[str, float, float, str]]:
    import test_imaging as cases

    from cxr.errors import ImageError
    from cxr.imaging import decode_image

    rows = []
    for name, build in (("bomb.png", cases.png_bomb_bytes), ("bomb.jpg", cases.jpeg_bomb_bytes),
                        ("bomb.bmp", cases.bmp_bomb_bytes), ("bomb.tiff", cases.tiff_bomb_bytes),
                        ("bomb.dcm", cases.dicom_bomb_bytes)):
        data = build()
        seconds = []
        for _ in range(5):
            tracemalloc.start()
            started = time.perf_counter()
            try:
                decode_image(data, name=name)
            except ImageError:
                pass
            else:
                raise SystemExit(f"{name} was decoded, not refused")
            seconds.append(time.perf_counter() - started)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        rows.append((f"refuse {name} ({len(data) / 1e3:.0f} KB; peak {peak / 1e3:.0f} KB traced)",
                     statistics.median(seconds), 0.5, "s"))
    return rows


def gradcam() -> list[tuple[str, float, float, str]]:
    import numpy as np

    from cxr import explain
    from cxr.models import build_model

    cam = explain.GradCam(build_model("fast", (150, 150, 1)))
    image = np.random.default_rng(0).integers(0, 256, (150, 150), dtype=np.uint8)
    cam(image)  # the first call traces the gradient function
    started = time.perf_counter()
    for _ in range(5):
        cam(image)
    return [("Grad-CAM, fast network, 150 px (per image)", (time.perf_counter() - started) / 5, 1.0, "s")]


def junk(work: Path) -> list[tuple[str, float, float, str]]:
    from test_hostile_inputs import write_folder

    from cxr import datasets
    from cxr.config import DataConfig

    root = write_folder(work / "mixed")
    folder = root / "train" / "normal"
    for index in range(1500):
        (folder / f"notes-{index}.txt").write_text("not an image")
    for index in range(500):
        (folder / f"IM-9{index:03d}-0001.png").write_bytes(b"fake png " + str(index).encode())
    started = time.perf_counter()
    report = datasets.import_dataset(root, config=DataConfig(image_size=32))
    seconds = time.perf_counter() - started
    assert report.num_images == 24 and len(report.skipped) == 500
    return [("import 24 images among 2,000 junk files", seconds, 60.0, "s")]


def queued(work: Path) -> list[tuple[str, float, float, str]]:
    import psutil
    from helpers_training import tiny_config, write_npz

    from cxr import jobs, runs
    from cxr.datasets import Dataset
    from cxr.runs import process_identity

    dataset = Dataset.from_npz(write_npz(work / "tiny.npz"))
    busy = runs.new_run(dataset, tiny_config())
    runs.write_status(busy, state="running", **process_identity())  # this process plays the running run
    second = jobs.start_training(dataset, tiny_config(), max_concurrent=1)
    deadline = time.monotonic() + 60
    while jobs.queue_position(second) != 1 or "waiting" not in (runs.read_status(second).get("message") or ""):
        if time.monotonic() > deadline:
            raise SystemExit("the second run never waited in the queue")
        time.sleep(0.1)
    time.sleep(1.5)  # a few polls of the queue
    resident = psutil.Process(int(runs.read_status(second)["pid"])).memory_info().rss / 2**20
    jobs.stop(second)
    jobs.wait(second, timeout=60)
    runs.write_status(busy, state="finished")
    return [("resident memory of a queued training child", resident, 250.0, "MB")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    rows = []
    with tempfile.TemporaryDirectory(prefix="cxr-bench-guards-") as temporary:
        work = Path(temporary)
        os.environ["CXR_HOME"] = str(work / "home")
        for section in args.only:
            if section == "bombs":
                rows += bombs()
            elif section == "gradcam":
                rows += gradcam()
            elif section == "junk":
                rows += junk(work)
            else:
                rows += queued(work)
    width = max(len(row[0]) for row in rows)
    print(f"{'figure':{width}s}  {'measured':>12s}  {'target':>10s}  measured / target")
    for label, value, target, unit in rows:
        print(f"{label:{width}s}  {value:9.4f} {unit:2s}  {'< ' + format(target, 'g') + ' ' + unit:>10s}  "
              f"{value / target:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
