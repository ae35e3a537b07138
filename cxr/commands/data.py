"""``python -m cxr data import SOURCE`` and ``python -m cxr data info NAME`` (and ``data list``)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from cxr.config import DataConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="import and inspect data sets")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    importer = actions.add_parser("import", help="import a folder, .zip or .npz into the cache")
    importer.add_argument("source", help="data folder, .zip or MedMNIST-style .npz")
    importer.add_argument("--size", type=int, default=DataConfig.image_size,
                          help="square image size in pixels (default %(default)s, the tutorial's)")
    importer.add_argument("--name", help="data set name (default: source name and size, e.g. chest_xray-150)")
    importer.add_argument("--validation-fraction", type=float, default=DataConfig.validation_fraction,
                          help="share of train moved to validation, grouped by patient (default %(default)s)")
    importer.add_argument("--seed", type=int, default=DataConfig.seed, help="split seed (default %(default)s)")
    importer.add_argument("--keep-test-patients", action="store_true",
                          help="keep training images whose patient id also appears in test (leaks; off by default)")
    importer.add_argument("--force", action="store_true", help="decode again even if a current cache exists")
    importer.set_defaults(handler=run_import)

    info = actions.add_parser("info", help="class balance, duplicates and leakage report of an imported data set")
    info.add_argument("name", help="data set name or cache folder")
    info.add_argument("--json", action="store_true", help="print JSON instead of tables")
    info.set_defaults(handler=run_info)

    listing = actions.add_parser("list", help="list imported data sets")
    listing.set_defaults(handler=run_list)


class ProgressBar:
    """A one-line text progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, label: str, stream=None) -> None:
        # sys.stderr looked up now, not when this module was imported: it may have been replaced since.
        self.stream = stream if stream is not None else sys.stderr
        self.label, self.last, self.started = label, 0.0, time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last < 0.1:
            return
        self.last = now
        width = 30
        filled = int(width * done / max(total, 1))
        rate = done / max(now - self.started, 1e-9)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                          f"({rate:.0f} images/s)")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def run_import(args: argparse.Namespace) -> int:
    from cxr.datasets import import_dataset

    config = DataConfig(image_size=args.size, validation_fraction=args.validation_fraction, seed=args.seed,
                        drop_test_patients_from_train=not args.keep_test_patients)
    report = import_dataset(args.source, name=args.name, config=config, progress=ProgressBar("decoding"),
                            force=args.force)
    print(report.summary())
    for skipped in report.skipped[:20]:
        print(f"  skipped {skipped['file']}: {skipped['reason']}")
    if len(report.skipped) > 20:
        print(f"  … and {len(report.skipped) - 20} more (see dataset.json)")
    print(f"Stored in {report.path}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from cxr.datasets import load_dataset
    from cxr.splits import leakage_report

    dataset = load_dataset(args.name)
    counts = dataset.class_counts()
    leakage = leakage_report(dataset)
    report = dataset.report
    if args.json:
        print(json.dumps({"name": dataset.name, "image_size": dataset.image_size,
                          "class_counts": counts.to_dict(orient="records"), "leakage": leakage,
                          "duplicate_groups": report.duplicate_groups,
                          "duplicates_removed": len(report.duplicates_removed),
                          "overlap_removed": len(report.overlap_removed),
                          "skipped": report.skipped}, indent=2))
        return 0
    print(f"Data set {dataset.name!r}: {dataset.image_size} px, from {dataset.info.get('source')}")
    print(counts.to_string(index=False))
    print(f"Patients per split: {leakage['patients']}")
    print(f"Patients shared between splits: {leakage['shared_patients']} (must be 0)")
    print(f"Identical images shared between splits: {leakage['shared_images']} (must be 0)")
    print(f"Byte-identical groups in the source: {len(report.duplicate_groups)} "
          f"({sum(map(len, report.duplicate_groups))} files); extra copies removed: {len(report.duplicates_removed)}")
    print(f"Training images removed because their patient is in test: {len(report.overlap_removed)}")
    print(f"Unreadable files skipped at import: {len(report.skipped)}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from cxr.datasets import list_datasets

    found = list_datasets()
    if not found:
        print("No data sets imported yet. Import one with: python -m cxr data import PATH")
        return 0
    for item in found:
        total = sum(item.split_size(split) for split in item.counts)
        print(f"{item.name:30s} {item.image_size:>4} px  {total:>6} images  {item.created}")
    return 0
