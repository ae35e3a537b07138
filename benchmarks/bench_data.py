"""Import benchmark: wall time and peak memory of importing a data set, cache reload time, cache size.

    python benchmarks/bench_data.py ../shared/data/chest_xray --size 150

Runs in a temporary CXR_HOME (nothing is left behind) unless --keep. Prints one table of figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--keep", action="store_true", help="import into the real CXR_HOME")
    args = parser.parse_args()
    if not args.keep:
        os.environ["CXR_HOME"] = tempfile.mkdtemp(prefix="cxr-bench-")

    import numpy as np  # noqa: F401  (counted in the baseline memory)

    from cxr.config import DataConfig
    from cxr.datasets import import_dataset, load_dataset
    from cxr.splits import leakage_report

    baseline = peak_rss_mb()
    started = time.perf_counter()
    report = import_dataset(args.source, name="bench", config=DataConfig(image_size=args.size), force=True)
    import_seconds = time.perf_counter() - started
    import_peak = peak_rss_mb()

    reload_times = []
    for _ in range(3):
        started = time.perf_counter()
        dataset = load_dataset("bench")
        for split in dataset.splits:
            dataset.images(split)
            dataset.labels(split)
        reload_times.append(time.perf_counter() - started)
    started = time.perf_counter()
    dataset = load_dataset("bench", verify=False)
    for split in dataset.splits:
        dataset.images(split)
    unverified = time.perf_counter() - started

    cache_bytes = sum(file.stat().st_size for file in dataset.path.iterdir())
    leakage = leakage_report(dataset)
    print(report.summary())
    print()
    print(f"{'figure':45s} value")
    print(f"{'images found / kept':45s} {report.num_files} / {report.num_images}")
    print(f"{'import wall time (s), ' + str(os.cpu_count()) + ' cores':45s} {import_seconds:.1f}")
    print(f"{'import throughput (images/s)':45s} {report.num_files / import_seconds:.0f}")
    print(f"{'peak RSS before import (MB)':45s} {baseline:.0f}")
    print(f"{'peak RSS after import (MB)':45s} {import_peak:.0f}")
    print(f"{'cache reload, verified (s), best of 3':45s} {min(reload_times):.3f}")
    print(f"{'cache reload, not verified (s)':45s} {unverified:.3f}")
    print(f"{'cache size on disk (MB)':45s} {cache_bytes / 1e6:.1f}")
    print(f"{'duplicate groups / files':45s} {len(report.duplicate_groups)} / {sum(map(len, report.duplicate_groups))}")
    print(f"{'extra copies removed':45s} {len(report.duplicates_removed)}")
    print(f"{'train images removed (patient also in test)':45s} {len(report.overlap_removed)}")
    print(f"{'patients shared between splits':45s} {leakage['shared_patients']}")
    print(f"{'identical images shared between splits':45s} {leakage['shared_images']}")
    print(dataset.class_counts().to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
