"""Where a data set's images come from, and reading them: folders, ``.zip`` files and MedMNIST-style ``.npz``.

``find_source(path)`` recognises the layout and lists the image files with their split, class and patient id
(``patient_id``: from Kermany's file names); ``decode_files`` / ``decode_npz`` turn them into one ``(n, s, s)``
uint8 array. ``cxr.datasets`` imports these into its cache. A ``.zip`` is read in memory, never extracted,
and its unsafe entries are refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr.config import CLASS_NAMES, DataConfig
from cxr.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"})
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
CLASS_ALIASES = {"normal": 0, "pneumonia": 1}
JUNK_DIRECTORIES = frozenset({"__macosx", ".ds_store", ".git", ".ipynb_checkpoints"})
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


def read_npz_splits(npz_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The splits of a MedMNIST-style ``.npz`` (``{split}_images``, ``{split}_labels``; no pickle):
    ``{split: (images (n, h, w[, c]), labels (n,) int64 0/1)}``, "train" always present.

    Raises ``DatasetError`` naming the file and what is wrong (unreadable, pickled, missing or mismatched
    arrays, labels other than 0 and 1)."""
    npz_path = Path(npz_path)
    if npz_path.is_file() and not zipfile.is_zipfile(npz_path):
        # np.load would try it as a pickle and the message would wrongly speak of object arrays.
        raise DatasetError(f"{npz_path.name} is not a readable .npz file (an .npz is a zip archive and this "
                           f"file is not one). {LAYOUTS_ACCEPTED}")
    try:
        with np.load(npz_path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as error:
        raise DatasetError(f"{npz_path.name} holds object arrays that need pickle to load; pickled data can run "
                           "code, so it is refused. Save the images and labels as plain numeric arrays "
                           "(np.savez with uint8 images and integer labels).") from error
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise DatasetError(f"{npz_path.name} is not a readable .npz file ({error}). {LAYOUTS_ACCEPTED}") from error
    splits = {prefix: _npz_split(npz_path.name, prefix, arrays.get(f"{prefix}_images"), arrays.get(f"{prefix}_labels"))
              for prefix in ("train", "val", "test") if f"{prefix}_images" in arrays or f"{prefix}_labels" in arrays}
    if "train" not in splits:
        raise DatasetError(f"{npz_path.name} has no train_images/train_labels (keys found: "
                           f"{sorted(arrays)}). {LAYOUTS_ACCEPTED}")
    return splits


def _npz_split(file_name: str, prefix: str, images: np.ndarray | None,
               labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One split of an ``.npz``: ``(images (n, h, w[, c]), labels (n,) int64)``, or ``DatasetError``."""
    if images is None or labels is None:
        raise DatasetError(f"{file_name} has {prefix}_images or {prefix}_labels but not both.")
    labels = np.asarray(labels).reshape(len(labels), -1)[:, 0] if np.asarray(labels).ndim > 1 else labels
    if images.ndim != 3 and not (images.ndim == 4 and images.shape[-1] in (1, 3, 4)):
        raise DatasetError(f"{file_name}: {prefix}_images has shape {images.shape}; expected (n, h, w) or "
                           "(n, h, w, channels).")
    if len(images) != len(labels):
        raise DatasetError(f"{file_name}: {prefix}_images has {len(images)} images but {prefix}_labels "
                           f"has {len(labels)} labels.")
    values = set(np.unique(labels).tolist())
    if not values <= {0, 1}:
        raise DatasetError(f"{file_name}: {prefix}_labels holds {sorted(values)}; expected 0 (normal) "
                           "and 1 (pneumonia) only.")
    return images, np.asarray(labels, dtype=np.int64)


def _npz_source(npz_path: Path) -> Source:
    splits = read_npz_splits(npz_path)
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


def decode_files(files: list[SourceFile], image_size: int, max_pixels: int,
                progress: ProgressCallback | None) -> tuple[np.ndarray, list[dict | None], list[dict[str, str]]]:
    """Decode every file on all cores into one preallocated ``(n, s, s)`` uint8 array; returns the images, per
    file ``{"width", "height", "sha256"}`` (``None`` when skipped) and the skipped files with their reasons."""
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


def decode_npz(source: Source, image_size: int, progress: ProgressCallback | None
                ) -> tuple[np.ndarray, list[dict | None], list[dict[str, str]]]:
    """The arrays of an ``.npz`` source resized to ``(n, s, s)`` uint8 (colour averaged, other dtypes stretched
    to 0-255), with the same details as ``decode_files``."""
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


__all__ = ["Source", "SourceFile", "find_source", "source_fingerprint", "patient_id", "decode_files",
           "decode_npz", "read_npz_splits", "IMAGE_SUFFIXES", "LAYOUTS_ACCEPTED", "ProgressCallback"]
