"""Import guards that must refuse or report something: zip entry names, patient leakage, and the
validation fraction an import is asked for.

Each zip here is otherwise a valid data set, so the import can only fail for the reason under test
(the message is matched), and would succeed with that one check switched off.
"""

from __future__ import annotations

import math
import zipfile
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers_data import synthetic_xray, write_folder_dataset

from cxr.config import DataConfig
from cxr.datasets import import_dataset, list_datasets, load_dataset
from cxr.errors import DatasetError
from cxr.splits import assign_splits, leakage_report

SMALL = DataConfig(image_size=32)


def encode_png(image: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".png", image)[1].tobytes()


def valid_zip(path, extra_entry: str | None = None):
    """A zip that imports fine: train and test, 4 patients of each class in each; plus ``extra_entry``."""
    with zipfile.ZipFile(path, "w") as archive:
        for split_index, split in enumerate(("train", "test")):
            for index in range(4):
                patient = 100 * split_index + index
                archive.writestr(f"{split}/normal/IM-{patient:04d}-0001.png",
                                 encode_png(synthetic_xray(0, 32, seed=patient)))
                archive.writestr(f"{split}/pneumonia/person{patient}_virus_1.png",
                                 encode_png(synthetic_xray(1, 32, seed=500 + patient)))
        if extra_entry is not None:
            archive.writestr(zipfile.ZipInfo(extra_entry), encode_png(synthetic_xray(1, 32, seed=999)))
    return path


def test_the_zip_without_a_hostile_entry_imports(tmp_path):
    # The control: the same zip minus the entry under test is accepted, so a refusal below is that entry's.
    report = import_dataset(valid_zip(tmp_path / "ok.zip"), name="ok", config=SMALL)
    assert report.num_images == 16


@pytest.mark.parametrize("entry, message", [
    ("..\\evil\\normal\\a.png", "outside its folder"),  # Windows separators
    ("train\\..\\..\\pneumonia\\b.png", "outside its folder"),
    ("C:/evil/normal/a.png", "absolute path"),  # drive letters
    ("c:evil.png", "absolute path"),
    ("\\\\server\\share\\a.png", "absolute path"),  # UNC
    ("/etc/normal/a.png", "absolute path"),  # and a POSIX one among them
])
def test_zip_with_windows_style_unsafe_entries_is_refused(tmp_path, entry, message):
    with pytest.raises(DatasetError, match=message):
        import_dataset(valid_zip(tmp_path / "bad.zip", entry), name="bad", config=SMALL)
    assert list_datasets() == []


def test_zip_with_a_symbolic_link_among_valid_entries_is_refused(tmp_path):
    import stat

    path = valid_zip(tmp_path / "link.zip")
    with zipfile.ZipFile(path, "a") as archive:
        link = zipfile.ZipInfo("train/normal/IM-0999-0001.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link"):
        import_dataset(path, name="link", config=SMALL)
    assert list_datasets() == []


# ------------------------------------------------------------------------------------------- leakage
def test_leakage_report_counts_what_a_leaking_manifest_shares():
    manifest = pd.DataFrame([
        # split, patient, sha256
        ("train", "p1", "a"), ("train", "p2", "b"), ("train", "p3", "c"), ("train", "p3", "c"),
        ("val", "p2", "d"), ("val", "p4", "a"),
        ("test", "p1", "e"), ("test", "p2", "f"), ("test", "p5", ""), ("test", "p6", ""),
    ], columns=["split", "patient_id", "sha256"])
    dataset = SimpleNamespace(manifest=manifest, splits=("train", "val", "test"))
    report = leakage_report(dataset)
    # Hand count: train/val share p2 and image "a"; train/test share p1, p2; val/test share p2.
    assert report["shared_patients"] == {"train/val": 1, "train/test": 2, "val/test": 1}
    assert report["shared_images"] == {"train/val": 1, "train/test": 0, "val/test": 0}  # "" is no image hash
    assert report["duplicates_within_splits"] == 2  # the two "c" rows in train
    assert report["patients"] == {"train": 3, "val": 2, "test": 4}


def test_leakage_report_sees_a_patient_left_in_train_and_test(tmp_path):
    root = write_folder_dataset(tmp_path / "leaky", per_class=6)
    # person1003 is in test; put two more of its images in train, and keep them (the guard switched off).
    for index in (1, 2):
        (root / "train" / "pneumonia" / f"person1003_virus_9{index}.png").write_bytes(
            encode_png(synthetic_xray(1, 48, seed=900 + index)))
    import_dataset(root, name="leaky", config=DataConfig(image_size=32, drop_test_patients_from_train=False))
    dataset = load_dataset("leaky")
    report = leakage_report(dataset)
    manifest = dataset.manifest
    shared = set(manifest.loc[manifest["split"] == "test", "patient_id"]) & set(
        manifest.loc[manifest["split"] != "test", "patient_id"])
    assert shared == {"person1003"}
    assert report["shared_patients"]["train/test"] + report["shared_patients"]["val/test"] == 1


# -------------------------------------------------------------------------------- validation fraction
def test_assign_splits_takes_the_fraction_asked_hand_counted():
    # 40 patients per class, one image each: per class, patients go to validation until the count
    # reaches fraction x 40, so exactly ceil(fraction x 40) images of each class end in validation.
    manifest = pd.DataFrame({"label": [0] * 40 + [1] * 40, "patient_id": [f"p{i}" for i in range(80)],
                             "split": "train"})
    for fraction in (0.1, 0.25, 0.5):
        split = assign_splits(manifest, validation_fraction=fraction, test_fraction=0.15, seed=1, make_test=False)
        for label in (0, 1):
            assert (split[manifest["label"] == label] == "val").sum() == math.ceil(fraction * 40), (fraction, label)


def test_import_splits_at_the_validation_fraction_asked(tmp_path):
    root = write_folder_dataset(tmp_path / "flat", splits=(None,), per_class=40, size=32)
    counts = {}
    for fraction in (0.1, 0.5):
        name = f"flat-{int(fraction * 100)}"
        import_dataset(root, name=name, config=DataConfig(image_size=32, validation_fraction=fraction))
        labels = load_dataset(name).labels("val")
        counts[fraction] = [int((labels == label).sum()) for label in (0, 1)]
    # Per class: 40 images, one per patient; test takes ceil(0.15 x 40) = 6, validation then
    # ceil(fraction x 34) of the 34 left: 4 at 0.1, 17 at 0.5.
    assert counts == {0.1: [4, 4], 0.5: [17, 17]}


# ------------------------------------------------------------------- split edges (found by mutmut)
def test_patient_ids_from_windows_paths_and_dotted_names():
    from cxr.datasets import patient_id

    assert patient_id("train\\PNEUMONIA\\person5_virus_2.jpeg") == "person5"
    assert patient_id("C:\\data\\NORMAL\\IM-0042-0001.jpeg") == "im-0042"
    assert patient_id("site/x/scan.v2.PNG") == "scan.v2"  # unknown pattern: the stem, last suffix only


def test_two_patients_of_a_class_are_enough_and_one_stays_in_train():
    manifest = pd.DataFrame({"label": [0, 0, 1, 1, 1], "patient_id": ["a", "b", "c", "d", "e"], "split": "train"})
    split = assign_splits(manifest, validation_fraction=0.5, test_fraction=0.15, seed=0, make_test=False)
    assert (split[manifest["label"] == 0] == "val").sum() == 1  # one of the two normal patients
    assert (split[manifest["label"] == 1] == "val").sum() == 2  # ceil(0.5 x 3) of the three others


def test_the_splitter_keeps_one_patient_in_train_and_takes_at_least_one():
    manifest = pd.DataFrame({"label": np.repeat([0, 1], 10), "patient_id": [f"p{i}" for i in range(20)],
                             "split": "train"})
    split = assign_splits(manifest, validation_fraction=0.99, seed=1)  # ceil(9.9) = 10 patients, capped at 9
    assert [(split[manifest["label"] == label] == "val").sum() for label in (0, 1)] == [9, 9]
    split = assign_splits(manifest, validation_fraction=0.01, seed=1)  # 0.1 of an image: one patient
    assert [(split[manifest["label"] == label] == "val").sum() for label in (0, 1)] == [1, 1]


def test_identical_images_of_two_patients_in_one_split_count_as_duplicates():
    manifest = pd.DataFrame([("train", "p1", "x"), ("train", "p2", "x"), ("test", "p3", "y")],
                            columns=["split", "patient_id", "sha256"])
    report = leakage_report(SimpleNamespace(manifest=manifest, splits=("train", "test")))
    assert report["duplicates_within_splits"] == 2 and report["shared_images"] == {"train/test": 0}
