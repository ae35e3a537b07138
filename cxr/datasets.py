"""Find a chest X-ray data set, import it once into a uint8 cache, split it by patient, count classes.

Sources accepted (``find_source``):
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
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxr import paths
from cxr.atomic import atomic_write_text
from cxr.config import CLASS_NAMES, DataConfig
from cxr.errors import DatasetError

CACHE_VERSION = 1
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"})
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
CLASS_ALIASES = {"normal": 0, "pneumonia": 1}
JUNK_DIRECTORIES = frozenset({"__macosx", ".ds_store", ".git", ".ipynb_checkpoints"})
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LAYOUTS_ACCEPTED = (
    "Accepted layouts: a folder (or .zip) with train/ and test/ (optionally val/) sub-folders each holding "
    "normal/ and pneumonia/ (any case, e.g. Kaggle's chest_xray/train/NORMAL); a folder with only normal/ "
    "and pneumonia/ sub-folders; or a MedMNIST-style .npz with train_images, train_labels, test_images, "
    "test_labels (val_* optional)."
)

# Patient ids from Kermany file names: personNNN_bacteria_MMM / personNNN_virus_MMM (pneumonia),
# IM-NNNN-MMMM and NORMAL2-IM-NNNN-MMMM (normal). Anything else: one patient per file.
PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_", re.IGNORECASE),
    re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE),
)

ProgressCallback = Callable[[int, int], None]


def patient_id(file_name: str) -> str:
    """The patient id encoded in a Kermany file name, e.g. ``person12_virus_3.jpeg`` → ``person12``;
    the file's stem when the name follows no known pattern (each file its own patient)."""
    base = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    for pattern in PATIENT_PATTERNS:
        match = pattern.match(base)
        if match:
            return match.group(1).lower()
    return base.rsplit(".", 1)[0].lower()


# --------------------------------------------------------------------------------------------------
# Finding the files of a source
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceFile:
    """One image of a source: where it is, which class, and which split the source put it in."""

    file: str  # path relative to the source root, '/'-separated (shown to people, kept in the manifest)
    label: int  # 0 normal, 1 pneumonia
    split: str | None  # "train", "val", "test", or None when the source has no splits
    read: Callable[[], bytes] = field(repr=False, compare=False)


@dataclass
class Source:
    """What ``find_source`` found: the files, the layout's name, and what was ignored and why."""

    kind: str  # "folder", "zip", "npz"
    path: Path
    layout: str  # "splits" (train/test[/val]) or "classes" (normal/pneumonia only) or "npz"
    files: list[SourceFile]
    ignored: list[str] = field(default_factory=list)
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # npz only: split -> (images, labels)


def _is_junk(parts: Iterable[str]) -> bool:
    return any(part.lower() in JUNK_DIRECTORIES or part.startswith("._") or part.startswith(".")
               for part in parts)


def _classify_entries(relative_paths: list[str]) -> tuple[dict[tuple[str, ...], list[tuple[str, int, str | None]]],
                                                          list[str]]:
    """Group image paths by the folder that holds their split or class folders ("layout root").

    Returns ``{root_parts: [(relative_path, label, split)]}`` and the list of ignored entries.
    """
    roots: dict[tuple[str, ...], list[tuple[str, int, str | None]]] = {}
    ignored: list[str] = []
    for relative in relative_paths:
        parts = tuple(part for part in relative.split("/") if part)
        if not parts:
            continue
        if _is_junk(parts):
            continue
        if Path(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
            ignored.append(f"{relative}: not an image file name (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
            continue
        if len(parts) < 2 or parts[-2].lower() not in CLASS_ALIASES:
            ignored.append(f"{relative}: not inside a normal/ or pneumonia/ folder")
            continue
        label = CLASS_ALIASES[parts[-2].lower()]
        if len(parts) >= 3 and parts[-3].lower() in SPLIT_ALIASES:
            split: str | None = SPLIT_ALIASES[parts[-3].lower()]
            root = parts[:-3]
        else:
            split = None
            root = parts[:-2]
        roots.setdefault(root, []).append((relative, label, split))
    return roots, ignored


def _choose_root(roots: dict[tuple[str, ...], list[tuple[str, int, str | None]]], where: str,
                 ignored: list[str]) -> list[tuple[str, int, str | None]]:
    """Pick one layout root: the shallowest (Kaggle's zip holds a nested full copy ``chest_xray/chest_xray``)."""
    if not roots:
        raise DatasetError(f"No chest X-ray images in class folders were found in {where}. {LAYOUTS_ACCEPTED}")
    with_splits = {root: entries for root, entries in roots.items() if any(e[2] for e in entries)}
    candidates = with_splits or roots
    chosen = min(candidates, key=lambda root: (len(root), -len(candidates[root])))
    for root, entries in roots.items():
        if root != chosen:
            ignored.append(f"{'/'.join(root) or '.'}: {len(entries)} images ignored (another copy of the data "
                           f"set; using {'/'.join(chosen) or 'the top folder'})")
    entries = roots[chosen]
    splits = {e[2] for e in entries}
    if None in splits and len(splits) > 1:
        # Class folders both at the root and inside split folders: the split layout wins.
        ignored.extend(f"{e[0]}: outside the train/test folders, ignored" for e in entries if e[2] is None)
        entries = [e for e in entries if e[2] is not None]
    return entries


def _folder_source(folder: Path) -> Source:
    relative_paths = []
    for directory, subdirectories, files in os.walk(folder, followlinks=False):
        subdirectories[:] = sorted(d for d in subdirectories if not _is_junk([d]))
        for name in sorted(files):
            full = Path(directory) / name
            if full.is_symlink():
                continue  # a link could point anywhere on the server
            relative_paths.append(full.relative_to(folder).as_posix())
    roots, ignored = _classify_entries(relative_paths)
    entries = _choose_root(roots, f"the folder {folder}", ignored)

    def reader(relative: str) -> Callable[[], bytes]:
        return lambda: (folder / relative).read_bytes()

    files = [SourceFile(relative, label, split, reader(relative)) for relative, label, split in entries]
    layout = "splits" if entries and entries[0][2] is not None else "classes"
    return Source("folder", folder, layout, files, ignored)


def _check_zip_entry(info: zipfile.ZipInfo, zip_path: Path) -> None:
    name = info.filename
    mode = (info.external_attr >> 16) & 0xFFFF
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise DatasetError(f"The zip {zip_path.name} holds an entry with an absolute path ({name!r}); such "
                           "entries could write anywhere and are refused. Re-create the zip from the data "
                           "folder itself (e.g. `cd data && zip -r ../data.zip .`).")
    if ".." in re.split(r"[\\/]", name):
        raise DatasetError(f"The zip {zip_path.name} holds an entry pointing outside its folder ({name!r}); "
                           "it is refused (zip slip). Re-create the zip without '..' in entry names.")
    if stat.S_ISLNK(mode):
        raise DatasetError(f"The zip {zip_path.name} holds a symbolic link ({name!r}); links are refused "
                           "because they can point outside the archive. Re-create the zip with real files.")


def _zip_source(zip_path: Path, config: DataConfig) -> Source:
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DatasetError(f"{zip_path.name} is not a readable zip file ({error}). Expected a .zip of a data "
                           f"folder. {LAYOUTS_ACCEPTED}") from error
    infos = [info for info in archive.infolist() if not info.is_dir()]
    for info in infos:
        _check_zip_entry(info, zip_path)
    total = sum(info.file_size for info in infos)
    if total > config.max_zip_bytes:
        raise DatasetError(f"The zip {zip_path.name} would uncompress to {total / 1e9:.2f} GB, over the limit of "
                           f"{config.max_zip_bytes / 1e9:.2f} GB (possibly a zip bomb). Import the folder "
                           "instead, or raise DataConfig.max_zip_bytes if the data set is really that large.")
    by_name = {info.filename.replace("\\", "/"): info for info in infos}
    roots, ignored = _classify_entries(list(by_name))
    entries = _choose_root(roots, f"the zip {zip_path.name}", ignored)

    def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            # zipfile stops at the declared size, so an entry cannot inflate past what was checked above.
            with zipfile.ZipFile(zip_path) as handle, handle.open(info) as member:
                return member.read(info.file_size + 1)
        return read

    files = [SourceFile(relative, label, split, reader(by_name[relative])) for relative, label, split in entries]
    layout = "splits" if entries and entries[0][2] is not None else "classes"
    return Source("zip", zip_path, layout, files, ignored)


def _npz_source(npz_path: Path) -> Source:
    try:
        with np.load(npz_path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as error:
        raise DatasetError(f"{npz_path.name} holds object arrays that need pickle to load; pickled data can run "
                           "code, so it is refused. Save the images and labels as plain numeric arrays "
                           "(np.savez with uint8 images and integer labels).") from error
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise DatasetError(f"{npz_path.name} is not a readable .npz file ({error}). {LAYOUTS_ACCEPTED}") from error
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for prefix in ("train", "val", "test"):
        images, labels = arrays.get(f"{prefix}_images"), arrays.get(f"{prefix}_labels")
        if images is None and labels is None:
            continue
        if images is None or labels is None:
            raise DatasetError(f"{npz_path.name} has {prefix}_images or {prefix}_labels but not both.")
        labels = np.asarray(labels).reshape(len(labels), -1)[:, 0] if np.asarray(labels).ndim > 1 else labels
        if images.ndim == 4 and images.shape[-1] in (1, 3, 4):
            pass
        elif images.ndim != 3:
            raise DatasetError(f"{npz_path.name}: {prefix}_images has shape {images.shape}; expected (n, h, w) or "
                               "(n, h, w, channels).")
        if len(images) != len(labels):
            raise DatasetError(f"{npz_path.name}: {prefix}_images has {len(images)} images but {prefix}_labels "
                               f"has {len(labels)} labels.")
        values = set(np.unique(labels).tolist())
        if not values <= {0, 1}:
            raise DatasetError(f"{npz_path.name}: {prefix}_labels holds {sorted(values)}; expected 0 (normal) "
                               "and 1 (pneumonia) only.")
        splits[prefix] = (images, np.asarray(labels, dtype=np.int64))
    if "train" not in splits:
        raise DatasetError(f"{npz_path.name} has no train_images/train_labels (keys found: "
                           f"{sorted(arrays)}). {LAYOUTS_ACCEPTED}")
    files = []
    for prefix, (_, labels) in splits.items():
        files.extend(SourceFile(f"{prefix}/{index}", int(label), prefix, lambda: b"")
                     for index, label in enumerate(labels))
    layout = "npz" if "test" in splits else "npz-train-only"
    return Source("npz", npz_path, layout, files, [], arrays=splits)


def find_source(source: str | os.PathLike, config: DataConfig = DataConfig()) -> Source:
    """Recognise the layout of ``source`` (folder, .zip or .npz) and list its images with labels."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f"No file or folder at {str(path)!r}. Give the path of a data folder, a .zip or a "
                           f".npz on this server. {LAYOUTS_ACCEPTED}")
    if path.is_dir():
        found = _folder_source(path)
    elif path.suffix.lower() == ".zip":
        found = _zip_source(path, config)
    elif path.suffix.lower() == ".npz":
        found = _npz_source(path)
    else:
        raise DatasetError(f"{path.name} is neither a folder, a .zip nor a .npz. {LAYOUTS_ACCEPTED}")
    labels = {f.label for f in found.files}
    if len(found.files) < 2 or len(labels) < 2:
        present = ", ".join(CLASS_NAMES[label] for label in sorted(labels)) or "none"
        raise DatasetError(f"{path.name} holds {len(found.files)} image(s) of class(es): {present}. A data set needs "
                           f"images of both classes, normal and pneumonia. {LAYOUTS_ACCEPTED}")
    return found


def source_fingerprint(path: Path) -> str:
    """A cheap identity of a source (names, sizes, modification times) to know whether a cache is current."""
    digest = hashlib.sha256()
    path = Path(path)
    if path.is_dir():
        for directory, subdirectories, files in os.walk(path):
            subdirectories.sort()
            for name in sorted(files):
                full = Path(directory) / name
                try:
                    info = full.lstat()
                except OSError:
                    continue
                digest.update(f"{full.relative_to(path).as_posix()}|{info.st_size}|{info.st_mtime_ns}\n".encode())
    else:
        info = path.stat()
        digest.update(f"{path.name}|{info.st_size}|{info.st_mtime_ns}".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------------
@dataclass
class ImportReport:
    """What an import did: counts, what was skipped and why, duplicates and patient overlaps."""

    name: str
    path: Path
    source: str
    layout: str
    image_size: int
    num_files: int = 0  # image files found in the source
    num_images: int = 0  # images kept in the cache
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> count
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable files: file, reason
    ignored: list[str] = field(default_factory=list)  # entries that are not part of the data set
    duplicate_groups: list[list[str]] = field(default_factory=list)  # byte-identical files
    duplicates_removed: list[str] = field(default_factory=list)
    overlap_removed: list[str] = field(default_factory=list)  # train files of patients also in test
    seconds: float = 0.0
    from_cache: bool = False

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["path"] = str(self.path)
        return values

    def summary(self) -> str:
        """A few lines for people: what was read, kept, skipped and removed."""
        lines = [f"Data set {self.name!r} ({self.layout} layout, {self.image_size} px) from {self.source}",
                 f"{self.num_images} images kept of {self.num_files} found"
                 + (" (loaded from cache)" if self.from_cache else f" in {self.seconds:.1f} s")]
        for split, counts in self.counts.items():
            lines.append(f"  {split:5s}: " + ", ".join(f"{cls} {n}" for cls, n in counts.items()))
        if self.skipped:
            lines.append(f"{len(self.skipped)} unreadable file(s) skipped, e.g. {self.skipped[0]['file']}: "
                         f"{self.skipped[0]['reason']}")
        if self.duplicate_groups:
            lines.append(f"{len(self.duplicate_groups)} group(s) of byte-identical files "
                         f"({sum(map(len, self.duplicate_groups))} files); {len(self.duplicates_removed)} "
                         "extra copies removed")
        if self.overlap_removed:
            lines.append(f"{len(self.overlap_removed)} training image(s) removed: their patient id also appears in "
                         "the test split (no patient may be in two splits)")
        if self.ignored:
            lines.append(f"{len(self.ignored)} entry(ies) ignored, e.g. {self.ignored[0]}")
        return "\n".join(lines)


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


def _decode_all(files: list[SourceFile], image_size: int, max_pixels: int,
                progress: ProgressCallback | None) -> tuple[np.ndarray, list[dict | None], list[dict[str, str]]]:
    """Decode every file on all cores into one preallocated (n, s, s) uint8 array."""
    from cxr.imaging import load_image

    images = np.zeros((len(files), image_size, image_size), dtype=np.uint8)
    details: list[dict | None] = [None] * len(files)
    skipped: list[dict[str, str]] = []

    def work(index: int) -> None:
        item = files[index]
        try:
            data = item.read()
        except OSError as error:
            skipped.append({"file": item.file, "reason": f"could not be read ({error.strerror or error})"})
            return
        try:
            pixels, info = load_image(data, image_size, name=item.file, max_pixels=max_pixels)
        except ValueError as error:  # ImageError: the message names the file and the problem
            skipped.append({"file": item.file, "reason": str(error)})
            return
        images[index] = pixels
        details[index] = {"width": int(info.width), "height": int(info.height),
                          "sha256": hashlib.sha256(data).hexdigest()}

    # OpenCV and hashlib release the GIL, so threads use every core without pickling images around.
    workers = max(1, min(32, os.cpu_count() or 1))
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(work, range(len(files))):
            done += 1
            if progress is not None and (done % 64 == 0 or done == len(files)):
                progress(done, len(files))
    return images, details, skipped


def _npz_decode(source: Source, image_size: int, progress: ProgressCallback | None
                ) -> tuple[np.ndarray, list[dict | None], list[dict[str, str]]]:
    from cxr.imaging import resize_square

    assert source.arrays is not None  # internal invariant: _npz_source fills it
    total = sum(len(labels) for _, labels in source.arrays.values())
    images = np.zeros((total, image_size, image_size), dtype=np.uint8)
    details: list[dict | None] = []
    index = 0
    for split_images, _labels in source.arrays.values():
        for image in split_images:
            array = np.asarray(image)
            if array.ndim == 3:
                array = array[..., :3].mean(axis=-1) if array.shape[-1] >= 3 else array[..., 0]
            if array.dtype != np.uint8:
                low, high = float(array.min()), float(array.max())
                array = ((array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array, float))
                array = array.round().astype(np.uint8)
            images[index] = resize_square(np.ascontiguousarray(array, dtype=np.uint8), image_size)
            details.append({"width": int(array.shape[1]), "height": int(array.shape[0]),
                            "sha256": hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()})
            index += 1
            if progress is not None and (index % 256 == 0 or index == total):
                progress(index, total)
    return images, details, []


def assign_splits(manifest: pd.DataFrame, *, validation_fraction: float, test_fraction: float, seed: int,
                  make_test: bool) -> pd.Series:
    """Patient-grouped, class-stratified split of the rows of ``manifest`` that are not already "test".

    ``manifest`` needs columns ``label``, ``patient_id`` and ``split`` ("train", "val", "test" or None).
    The source's own small ``val`` is folded into the pool first. Each patient goes wholly to one split;
    per class, patients (shuffled with ``seed``) are moved to validation until that class's share
    reaches ``validation_fraction``. Returns the new split of every row.
    """
    split = manifest["split"].where(manifest["split"] == "test", "train").copy()
    rng = np.random.default_rng(seed)

    def carve(pool_mask: pd.Series, fraction: float, target: str) -> None:
        pool = manifest[pool_mask]
        # A patient's class is its majority label (Kermany patients have one class).
        patient_labels = pool.groupby("patient_id")["label"].agg(lambda s: int(round(s.mean())))
        patient_sizes = pool.groupby("patient_id").size()
        for label in sorted(pool["label"].unique()):
            patients = np.array(sorted(patient_labels.index[patient_labels == label]))
            if len(patients) < 2:
                raise DatasetError(f"Class {CLASS_NAMES[label]} has images from only {len(patients)} patient(s) "
                                   f"left for the {target} split; at least 2 patients per class are needed so "
                                   "that no patient is in two splits. Add more images of that class.")
            rng.shuffle(patients)
            wanted = fraction * int((pool["label"] == label).sum())
            taken = 0
            chosen = []
            for patient in patients[:-1]:  # always leave at least one patient in the pool
                if taken >= wanted:
                    break
                chosen.append(patient)
                taken += int(patient_sizes[patient])
            split[manifest["patient_id"].isin(chosen) & pool_mask] = target

    if make_test:
        carve(split == "train", test_fraction, "test")
    carve(split == "train", validation_fraction, "val")
    return split


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
                report = _report_from_dict(info["report"])
                report.from_cache = True
                report.seconds = time.perf_counter() - started
                return report
        except (ValueError, KeyError, OSError):
            pass  # unreadable or damaged cache: import again

    found = find_source(source_path, config)
    if found.kind == "npz":
        images, details, skipped = _npz_decode(found, config.image_size, progress)
    else:
        images, details, skipped = _decode_all(found.files, config.image_size, config.max_image_pixels, progress)

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

    report = ImportReport(name=name, path=target, source=str(source_path), layout=found.layout,
                          image_size=config.image_size, num_files=len(found.files), skipped=skipped,
                          ignored=found.ignored)
    kept = manifest[keep].copy()
    kept["row"] = np.flatnonzero(keep)
    is_test = kept["split"] == "test"

    # Byte-identical files: report every group; keep one copy per group outside the official test split,
    # and drop train copies of images that are in test.
    groups = kept[kept["sha256"] != ""].groupby("sha256")["file"].apply(list)
    report.duplicate_groups = [sorted(files) for files in groups if len(files) > 1]
    test_hashes = set(kept.loc[is_test, "sha256"])
    duplicate_mask = (~is_test) & (kept.duplicated("sha256", keep="first") | kept["sha256"].isin(test_hashes))
    duplicate_mask &= kept["sha256"] != ""
    report.duplicates_removed = kept.loc[duplicate_mask, "file"].tolist()
    kept = kept[~duplicate_mask]

    # A patient in the official test split must not also be in train or validation.
    if config.drop_test_patients_from_train:
        test_patients = set(kept.loc[kept["split"] == "test", "patient_id"])
        overlap = (kept["split"] != "test") & kept["patient_id"].isin(test_patients)
        report.overlap_removed = kept.loc[overlap, "file"].tolist()
        kept = kept[~overlap]

    make_test = not (kept["split"] == "test").any()
    kept["split"] = assign_splits(kept, validation_fraction=config.validation_fraction,
                                  test_fraction=config.test_fraction, seed=config.seed, make_test=make_test)
    _write_cache(target, images, kept, report, config, fingerprint)
    report.num_images = len(kept)
    report.counts = {split: {CLASS_NAMES[label]: int(((kept["split"] == split) & (kept["label"] == label)).sum())
                             for label in (0, 1)} for split in SPLITS if (kept["split"] == split).any()}
    report.seconds = time.perf_counter() - started
    _update_report(target, report)
    return report


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


def _report_from_dict(values: dict) -> ImportReport:
    values = dict(values)
    values["path"] = Path(values["path"])
    known = {f.name for f in dataclasses.fields(ImportReport)}
    return ImportReport(**{k: v for k, v in values.items() if k in known})


# --------------------------------------------------------------------------------------------------
# Loading the cache
# --------------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """An imported data set, read from its cache. Arrays are loaded on first use of each split."""

    name: str
    path: Path
    image_size: int
    info: dict
    manifest: pd.DataFrame
    _arrays: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(split for split in SPLITS if f"{split}_images.npy" in self.info.get("files", {}))

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
        return _report_from_dict(self.info["report"])


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
    available = ", ".join(d["name"] for d in list_datasets()) or "none yet"
    raise DatasetError(f"No imported data set named {str(name_or_path)!r} (imported: {available}). Import it "
                       "first: `python -m cxr data import PATH` or the Data page.")


def load_dataset(name_or_path: str | os.PathLike, *, verify: bool = True, repair: bool = True) -> Dataset:
    """Open an imported data set by name (under ``datasets/``) or by the path of its cache folder.

    With ``verify``, every cache file's size and SHA-256 are checked against ``dataset.json`` (about
    0.1 s for Kermany at 150 px). A damaged cache is re-imported from its source when ``repair`` and the
    source still exists; otherwise ``DatasetError`` says which file is damaged and what to do.
    """
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


def list_datasets() -> list[dict]:
    """Imported data sets: name, image_size, counts (split -> class -> n), created, source."""
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
        found.append({"name": candidate.name, "image_size": info.get("image_size"),
                      "counts": report.get("counts", {}), "created": info.get("created"),
                      "source": info.get("source"), "num_images": report.get("num_images")})
    return found


def leakage_report(dataset: Dataset) -> dict:
    """Check the stored splits: patients and identical images shared between splits (both must be 0)."""
    manifest = dataset.manifest
    shared_patients = {}
    shared_images = {}
    for index, first in enumerate(dataset.splits):
        for second in dataset.splits[index + 1:]:
            a, b = manifest[manifest["split"] == first], manifest[manifest["split"] == second]
            shared_patients[f"{first}/{second}"] = len(set(a["patient_id"]) & set(b["patient_id"]))
            shared_images[f"{first}/{second}"] = len(set(a["sha256"]) & set(b["sha256"]) - {""})
    within = manifest[manifest.duplicated(["split", "sha256"], keep=False) & (manifest["sha256"] != "")]
    return {"shared_patients": shared_patients, "shared_images": shared_images,
            "duplicates_within_splits": int(len(within)),
            "patients": {split: int(manifest.loc[manifest["split"] == split, "patient_id"].nunique())
                         for split in dataset.splits}}


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


__all__ = ["import_dataset", "load_dataset", "list_datasets", "class_counts", "leakage_report", "Dataset",
           "ImportReport", "find_source", "patient_id", "assign_splits", "read_upload",
           "check_server_folder"]
