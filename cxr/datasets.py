"""Import a chest X-ray data set once into a uint8 cache, split it by patient, load it, count classes.

Sources accepted (``cxr.sources.find_source``):
- a folder in the tutorial's layout ``{train,test,val}/{normal,pneumonia}``;
- the Kaggle / Mendeley layout ``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}``, including its nested
  ``chest_xray/chest_xray`` copy (ignored, reported) and ``__MACOSX`` junk (ignored);
- the same inside a ``.zip`` file (read in memory, never extracted; unsafe entries refused);
- a MedMNIST-style ``.npz`` (``train_images``, ``train_labels``, ``val_…``, ``test_…``; no pickle);
- a folder with only ``{normal,pneumonia}`` sub-folders (then test and validation splits are made).

The cache (``datasets/<name>/``): ``<split>_images.npy`` (n, s, s) uint8, ``<split>_labels.npy`` (n,)
int64, ``manifest.csv`` (one row per image: split, file, label, patient_id, width, height, sha256) and
``dataset.json`` (version, source, settings, counts, the import report and a SHA-256 of every cache
file so that a truncated or edited cache is detected, never half-read).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxr import paths
from cxr.atomic import atomic_write_text
from cxr.config import CLASS_NAMES, DataConfig
from cxr.dataset_records import DatasetEntry, ImportReport
from cxr.errors import DatasetError
from cxr.sources import (
    LAYOUTS_ACCEPTED,
    ProgressCallback,
    decode_files,
    decode_npz,
    find_source,
    patient_id,
    read_npz_splits,
    source_fingerprint,
)
from cxr.splits import assign_splits

CACHE_VERSION = 1
SPLITS = ("train", "val", "test")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# --------------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------------
def default_name(source: str | os.PathLike, image_size: int) -> str:
    """A data set name from the source's file name and the image size, e.g. ``chest_xray-150``."""
    stem = Path(source).expanduser().resolve().name
    stem = Path(stem).stem if Path(stem).suffix.lower() in (".zip", ".npz") else stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "dataset"
    return f"{stem[:50]}-{image_size}"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise DatasetError(f"Data set name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit.")
    return name


def import_dataset(source: str | os.PathLike, *, name: str | None = None, config: DataConfig = DataConfig(),
                   progress: ProgressCallback | None = None, force: bool = False) -> ImportReport:
    """Import ``source`` into the cache ``datasets/<name>/`` and return the import report.

    When a cache of the same source (same files, sizes and times) and settings exists, nothing is
    decoded and its report is returned (``from_cache=True``) unless ``force``.
    """
    started = time.perf_counter()
    source_path = Path(source).expanduser().resolve()
    name = check_name(name or default_name(source_path, config.image_size))
    target = paths.datasets_dir() / name
    fingerprint = source_fingerprint(source_path) if source_path.exists() else ""
    if not force and (target / "dataset.json").exists():
        try:
            info = json.loads((target / "dataset.json").read_text())
            if (info.get("source_fingerprint") == fingerprint and info.get("source") == str(source_path)
                    and info.get("data_config") == config.to_dict() and info.get("version") == CACHE_VERSION):
                load_dataset(target, verify=True, repair=False)  # the cache must also be intact
                return dataclasses.replace(ImportReport.from_dict(info["report"]), from_cache=True,
                                           seconds=time.perf_counter() - started)
        except (ValueError, KeyError, OSError):
            pass  # unreadable or damaged cache: import again

    found = find_source(source_path, config)
    if found.kind == "npz":
        images, details, skipped = decode_npz(found, config.image_size, progress)
    else:
        images, details, skipped = decode_files(found.files, config.image_size, config.max_image_pixels, progress)

    rows = []
    for item, detail in zip(found.files, details, strict=True):
        rows.append({"split": item.split, "file": item.file, "label": item.label,
                     "patient_id": patient_id(item.file) if found.kind != "npz" else item.file,
                     "width": detail["width"] if detail else 0, "height": detail["height"] if detail else 0,
                     "sha256": detail["sha256"] if detail else "", "ok": detail is not None})
    manifest = pd.DataFrame(rows)
    keep = manifest["ok"].to_numpy()
    if keep.sum() < 2 or manifest.loc[keep, "label"].nunique() < 2:
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:3])
        raise DatasetError(f"Only {int(keep.sum())} readable image(s) in {source_path.name}, not of both classes; "
                           f"nothing was imported. {reasons}")

    kept = manifest[keep].copy()
    kept["row"] = np.flatnonzero(keep)
    kept, removed = _remove_duplicates_and_overlaps(kept, config)
    make_test = not (kept["split"] == "test").any()
    kept["split"] = assign_splits(kept, validation_fraction=config.validation_fraction,
                                  test_fraction=config.test_fraction, seed=config.seed, make_test=make_test)
    counts = {split: {CLASS_NAMES[label]: int(((kept["split"] == split) & (kept["label"] == label)).sum())
                      for label in (0, 1)} for split in SPLITS if (kept["split"] == split).any()}
    report = ImportReport(name=name, path=target, source=str(source_path), layout=found.layout,
                          image_size=config.image_size, num_files=len(found.files), num_images=len(kept),
                          counts=counts, skipped=skipped, ignored=found.ignored, **removed)
    _write_cache(target, images, kept, report, config, fingerprint)
    report = dataclasses.replace(report, seconds=time.perf_counter() - started)  # writing the cache included
    _update_report(target, report)
    return report


def _remove_duplicates_and_overlaps(kept: pd.DataFrame, config: DataConfig) -> tuple[pd.DataFrame, dict]:
    """``kept`` without extra copies of byte-identical files and (``drop_test_patients_from_train``) without
    train images of test patients; and the report's ``duplicate_groups``, ``duplicates_removed``,
    ``overlap_removed``."""
    is_test = kept["split"] == "test"
    # Byte-identical files: report every group; keep one copy per group outside the official test split,
    # and drop train copies of images that are in test.
    groups = kept[kept["sha256"] != ""].groupby("sha256")["file"].apply(list)
    test_hashes = set(kept.loc[is_test, "sha256"])
    duplicate_mask = (~is_test) & (kept.duplicated("sha256", keep="first") | kept["sha256"].isin(test_hashes))
    duplicate_mask &= kept["sha256"] != ""
    removed = {"duplicate_groups": [sorted(files) for files in groups if len(files) > 1],
               "duplicates_removed": kept.loc[duplicate_mask, "file"].tolist(), "overlap_removed": []}
    kept = kept[~duplicate_mask]
    # A patient in the official test split must not also be in train or validation.
    if config.drop_test_patients_from_train:
        test_patients = set(kept.loc[kept["split"] == "test", "patient_id"])
        overlap = (kept["split"] != "test") & kept["patient_id"].isin(test_patients)
        removed["overlap_removed"] = kept.loc[overlap, "file"].tolist()
        kept = kept[~overlap]
    return kept, removed


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_cache(target: Path, images: np.ndarray, kept: pd.DataFrame, report: ImportReport,
                 config: DataConfig, fingerprint: str) -> None:
    """Write the cache into a temporary folder beside ``target``, then swap it in with renames."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        files = {}
        ordered = []
        for split in SPLITS:
            part = kept[kept["split"] == split]
            if part.empty:
                continue
            ordered.append(part)
            np.save(staging / f"{split}_images.npy", images[part["row"].to_numpy()])
            np.save(staging / f"{split}_labels.npy", part["label"].to_numpy(dtype=np.int64))
            for kind in ("images", "labels"):
                file = staging / f"{split}_{kind}.npy"
                files[file.name] = {"sha256": _file_sha256(file), "bytes": file.stat().st_size}
        manifest = pd.concat(ordered)[["split", "file", "label", "patient_id", "width", "height", "sha256"]]
        manifest.to_csv(staging / "manifest.csv", index=False)
        files["manifest.csv"] = {"sha256": _file_sha256(staging / "manifest.csv"),
                                 "bytes": (staging / "manifest.csv").stat().st_size}
        info = {"version": CACHE_VERSION, "name": target.name, "source": report.source,
                "source_fingerprint": fingerprint, "layout": report.layout, "image_size": config.image_size,
                "data_config": config.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": files, "report": report.to_dict()}
        (staging / "dataset.json").write_text(json.dumps(info, indent=2))
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _update_report(target: Path, report: ImportReport) -> None:
    info_path = target / "dataset.json"
    info = json.loads(info_path.read_text())
    info["report"] = report.to_dict()
    atomic_write_text(info_path, json.dumps(info, indent=2))


# --------------------------------------------------------------------------------------------------
# Loading the cache
# --------------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """A data set: an imported one read from its cache (arrays loaded on first use of each split), or one
    held in memory (``from_arrays``, ``from_npz``: the same type, the same interface, nothing cached)."""

    name: str
    path: Path | None
    image_size: int
    info: dict
    manifest: pd.DataFrame
    _arrays: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def splits(self) -> tuple[str, ...]:
        stored = self.info.get("files", {})
        return tuple(split for split in SPLITS if split in self._arrays or f"{split}_images.npy" in stored)

    @property
    def validation_fraction(self) -> float | None:
        """The fraction of train its "val" split was carved at by the import (``None``: not imported)."""
        try:
            return float(self.info["data_config"]["validation_fraction"])
        except (KeyError, TypeError, ValueError):
            return None

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in self.splits:
            raise DatasetError(f"Data set {self.name!r} has no {split!r} split; it has {', '.join(self.splits)}.")
        if split not in self._arrays:
            self._arrays[split] = (np.load(self.path / f"{split}_images.npy", allow_pickle=False),
                                   np.load(self.path / f"{split}_labels.npy", allow_pickle=False))
        return self._arrays[split]

    def images(self, split: str) -> np.ndarray:
        """(n, s, s) uint8 images of ``split`` ("train", "val" or "test")."""
        return self._load(split)[0]

    def labels(self, split: str) -> np.ndarray:
        """(n,) int64 labels of ``split``: 0 normal, 1 pneumonia."""
        return self._load(split)[1]

    def class_counts(self) -> pd.DataFrame:
        return class_counts(self.manifest)

    @property
    def report(self) -> ImportReport:
        return ImportReport.from_dict(self.info["report"])

    @classmethod
    def from_arrays(cls, name: str, arrays: dict[str, tuple[np.ndarray, np.ndarray]], *,
                    patient_ids: dict[str, np.ndarray] | None = None, path: Path | None = None) -> Dataset:
        """A data set held in memory: ``arrays`` maps "train" (required), "val", "test" to ``(images (n, s, s)
        uint8, labels (n,) 0/1)``; ``patient_ids`` optionally maps a split to (n,) ids (default: one patient
        per image), so that a validation split carved at training time keeps patients together."""
        if "train" not in arrays:
            raise DatasetError(f"Data set {name!r} has splits {sorted(arrays)}; a 'train' split is needed to train.")
        checked, rows = {}, []
        for split in (split for split in SPLITS if split in arrays):
            images, labels = _checked_split(name, split, *arrays[split])
            checked[split] = (images, labels)
            ids = (patient_ids or {}).get(split)
            ids = [f"{split}/{index}" for index in range(len(labels))] if ids is None else list(map(str, ids))
            rows += [{"split": split, "file": f"{split}/{index}", "label": int(label), "patient_id": ids[index],
                      "width": images.shape[2], "height": images.shape[1], "sha256": ""}
                     for index, label in enumerate(labels)]
        return cls(name=name, path=path, image_size=int(checked["train"][0].shape[1]),
                   info={"name": name, "source": str(path or ""), "image_size": int(checked["train"][0].shape[1])},
                   manifest=pd.DataFrame(rows), _arrays=checked)

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> Dataset:
        """A MedMNIST-style ``.npz`` read in memory (``cxr.sources.read_npz_splits``, the reader imports use),
        without importing it; its own splits are kept."""
        path = Path(path)
        return cls.from_arrays(path.stem, read_npz_splits(path), path=path.resolve())


def _checked_split(name: str, split: str, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(images (n, s, s) uint8, labels (n,) int64)`` of one in-memory split; ``DatasetError`` otherwise."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
        raise DatasetError(f"Split {split!r} of {name!r} holds images of shape {images.shape} and dtype "
                           f"{images.dtype}; expected (n, s, s) uint8 square images.")
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(labels) != len(images) or not np.isin(labels, (0, 1)).all():
        raise DatasetError(f"Split {split!r} of {name!r} has {len(labels)} labels for {len(images)} images "
                           f"(values {np.unique(labels)[:5]}); expected one label 0 (normal) or 1 (pneumonia) "
                           "per image.")
    return images, labels


def class_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per split and class: columns split, class, count, percent (of the split), in split order."""
    rows = []
    for split in SPLITS:
        part = manifest[manifest["split"] == split]
        if part.empty:
            continue
        for label, class_name in enumerate(CLASS_NAMES):
            count = int((part["label"] == label).sum())
            rows.append({"split": split, "class": class_name, "count": count,
                         "percent": round(100.0 * count / len(part), 1)})
    return pd.DataFrame(rows, columns=["split", "class", "count", "percent"])


def _resolve(name_or_path: str | os.PathLike) -> Path:
    candidate = Path(name_or_path).expanduser()
    if (candidate / "dataset.json").exists():
        return candidate
    if isinstance(name_or_path, str) and NAME_PATTERN.match(name_or_path):
        stored = paths.datasets_dir() / name_or_path
        if (stored / "dataset.json").exists():
            return stored
    available = ", ".join(entry.name for entry in list_datasets()) or "none yet"
    raise DatasetError(f"No imported data set named {str(name_or_path)!r} (imported: {available}). Import it "
                       "first: `python -m cxr data import PATH` or the Data page.")


def load_dataset(name_or_path: str | os.PathLike, *, verify: bool = True, repair: bool = True) -> Dataset:
    """Open an imported data set by name (under ``datasets/``) or by the path of its cache folder; the path
    of a MedMNIST-style ``.npz`` file gives ``Dataset.from_npz`` (read in memory, not imported).

    With ``verify``, every cache file's size and SHA-256 are checked against ``dataset.json`` (about
    0.1 s for Kermany at 150 px). A damaged cache is re-imported from its source when ``repair`` and the
    source still exists; otherwise ``DatasetError`` says which file is damaged and what to do.
    """
    if str(name_or_path).endswith(".npz") and Path(name_or_path).is_file():
        return Dataset.from_npz(name_or_path)
    path = _resolve(name_or_path)
    try:
        info = json.loads((path / "dataset.json").read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"The description of data set {path.name!r} (dataset.json) is unreadable ({error}). "
                           "Import the data set again.") from error
    if info.get("version") != CACHE_VERSION:
        raise DatasetError(f"Data set {path.name!r} was stored by another version of cxr (cache version "
                           f"{info.get('version')!r}, expected {CACHE_VERSION}). Import it again.")
    if verify:
        damaged = []
        for file_name, expected in info.get("files", {}).items():
            file = path / file_name
            intact = file.exists() and file.stat().st_size == expected["bytes"]
            if not intact or _file_sha256(file) != expected["sha256"]:
                damaged.append(file_name)
        if damaged:
            source = Path(info.get("source", ""))
            if repair and info.get("source") and source.exists():
                config = DataConfig.from_dict(info["data_config"])
                import_dataset(source, name=path.name if path.parent == paths.datasets_dir() else None,
                               config=config, force=True)
                return load_dataset(path, verify=True, repair=False)
            raise DatasetError(f"The cache of data set {path.name!r} is damaged ({', '.join(damaged)} truncated or "
                               f"changed since import) and its source {info.get('source')!r} is not available to "
                               "re-import it. Import the data set again from its source.")
    try:
        manifest = pd.read_csv(path / "manifest.csv")
    except (OSError, ValueError) as error:
        raise DatasetError(f"The manifest of data set {path.name!r} is unreadable ({error}). "
                           "Import it again.") from error
    return Dataset(name=info.get("name", path.name), path=path, image_size=int(info["image_size"]), info=info,
                   manifest=manifest)


def list_datasets() -> list[DatasetEntry]:
    """Imported data sets (``cxr.dataset_records.DatasetEntry``: name, image_size, counts, created, source,
    num_images), by name."""
    folder = paths.datasets_dir()
    found = []
    if not folder.exists():
        return found
    for candidate in sorted(folder.iterdir()):
        if candidate.name.startswith(".") or not (candidate / "dataset.json").exists():
            continue
        try:
            info = json.loads((candidate / "dataset.json").read_text())
        except (OSError, ValueError):
            continue
        report = info.get("report", {})
        found.append(DatasetEntry(name=candidate.name, image_size=info.get("image_size"),
                                  counts=report.get("counts", {}), created=info.get("created"),
                                  source=info.get("source"), num_images=report.get("num_images")))
    return found


def check_server_folder(path: str | os.PathLike) -> Path:
    """Check a folder path typed into the app before importing it; return it resolved.

    On a shared server, set ``CXR_DATA_ROOTS`` (folders separated by ``:``) to the folders users may
    import from: any other path is refused. Whatever the setting, the file system's root and the
    system folders are refused (an import would walk the whole disk).
    """
    resolved = Path(path).expanduser().resolve()
    system = {Path("/"), Path("/proc"), Path("/sys"), Path("/dev"), Path("/etc"), Path("/usr"), Path("/boot")}
    if resolved in system or any(parent in system - {Path("/")} for parent in resolved.parents):
        raise DatasetError(f"{str(path)!r} is a system folder, not a data set; importing it is refused. Give the "
                           f"folder that holds the data set's train/ and test/ (or normal/ and pneumonia/) folders.")
    roots = [Path(item).expanduser().resolve() for item in os.environ.get("CXR_DATA_ROOTS", "").split(":") if item]
    if roots and not any(resolved == root or root in resolved.parents for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise DatasetError(f"{str(path)!r} is outside the folders this server allows imports from ({allowed}). "
                           "Choose a folder inside one of them, or upload a .zip instead.")
    return resolved


def read_upload(data: bytes, file_name: str, *, config: DataConfig = DataConfig(), name: str | None = None,
                progress: ProgressCallback | None = None) -> ImportReport:
    """Import an uploaded ``.zip`` or ``.npz`` (bytes) by writing it to a private temporary file first."""
    suffix = Path(file_name).suffix.lower()
    if suffix not in (".zip", ".npz"):
        raise DatasetError(f"{file_name!r} is not a .zip or .npz file. Upload a zip of a data folder or a "
                           f"MedMNIST-style .npz. {LAYOUTS_ACCEPTED}")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(file_name).stem).strip("-._") or "upload"
    with tempfile.TemporaryDirectory(prefix="cxr-upload-") as folder:
        path = Path(folder) / f"{stem}{suffix}"
        path.write_bytes(data)
        report = import_dataset(path, name=name or f"{stem[:50]}-{config.image_size}", config=config,
                                progress=progress, force=True)
    return report


__all__ = ["import_dataset", "load_dataset", "list_datasets", "class_counts", "Dataset", "read_upload",
           "check_server_folder"]
