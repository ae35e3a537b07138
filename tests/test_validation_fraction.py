"""The validation fraction asked for at training time is honoured on an imported data set.

An import carves "val" by patient at ``DataConfig.validation_fraction`` (0.10 by default). Training at
that same fraction uses the stored split as it is; training at another fraction pools train and val and
re-splits them by patient, per class, at the fraction asked, with the import's own splitter
(``cxr.splits.assign_splits``) (``cxr train DATASET --validation-fraction
F`` and the Train page's "Validation fraction"); the run's metrics.json records the size as
``validation.n``. Test images are never touched.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from helpers_data import write_folder_dataset

from cxr.config import DataConfig, TrainingConfig
from cxr.datasets import import_dataset, load_dataset
from cxr.pipeline import training_arrays


def config(fraction: float) -> TrainingConfig:
    return TrainingConfig(model="fast", image_size=32, validation_fraction=fraction, seed=3)


@pytest.fixture
def one_image_per_patient(tmp_path) -> str:
    # 40 images (40 patients) per class, no splits: the import takes ceil(0.15 x 40) = 6 per class for
    # test, then ceil(0.10 x 34) = 4 per class for val, leaving 30 per class in train.
    root = write_folder_dataset(tmp_path / "flat", splits=(None,), per_class=40, size=32)
    import_dataset(root, name="flat", config=DataConfig(image_size=32))
    return "flat"


def class_counts(labels: np.ndarray) -> list[int]:
    return [int((labels == label).sum()) for label in (0, 1)]


def test_training_at_the_import_fraction_uses_the_stored_split(one_image_per_patient):
    dataset = load_dataset(one_image_per_patient)
    arrays = training_arrays(dataset, config(0.10))
    np.testing.assert_array_equal(arrays["val"][0], dataset.images("val"))
    assert class_counts(arrays["val"][1]) == [4, 4] and class_counts(arrays["train"][1]) == [30, 30]


def test_a_default_import_trains_on_exactly_its_stored_arrays(tmp_path):
    # Models are trained on data sets imported at the default fraction: their train, validation and test
    # arrays must be the import's, untouched by the training path (none re-split, none re-ordered).
    root = write_folder_dataset(tmp_path / "pairs", splits=("train", "test"), per_class=40, patients_per_class=20,
                                size=32)
    import_dataset(root, name="pairs", config=DataConfig(image_size=32))
    dataset = load_dataset("pairs")
    assert TrainingConfig().validation_fraction == DataConfig().validation_fraction == dataset.validation_fraction
    arrays = training_arrays(dataset, config(TrainingConfig().validation_fraction))
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(arrays[split][0], dataset.images(split))
        np.testing.assert_array_equal(arrays[split][1], dataset.labels(split))
    # The import's validation patients, as the import picked them before training and import shared one
    # splitter (recorded from that version): moving the splitter changed no stored split.
    manifest = dataset.manifest
    assert sorted(manifest.loc[manifest["split"] == "val", "file"]) == [
        "train/normal/IM-0009-0009.png", "train/normal/IM-0009-0029.png", "train/normal/IM-0015-0015.png",
        "train/normal/IM-0015-0035.png", "train/pneumonia/person16_bacteria_57.png",
        "train/pneumonia/person16_bacteria_77.png", "train/pneumonia/person8_bacteria_49.png",
        "train/pneumonia/person8_bacteria_69.png"]


def test_another_fraction_re_splits_train_and_val_at_that_fraction(one_image_per_patient):
    dataset = load_dataset(one_image_per_patient)
    # The import's splitter: whole patients until ceil(fraction x 34) images of each class.
    for fraction, per_class in ((0.5, 17), (0.3, 11), (0.05, 2)):
        arrays = training_arrays(dataset, config(fraction))
        assert class_counts(arrays["val"][1]) == [per_class, per_class], fraction
        assert class_counts(arrays["train"][1]) == [34 - per_class] * 2, fraction
        np.testing.assert_array_equal(arrays["test"][0], dataset.images("test"))  # test untouched
    # Same seed, same split.
    first, again = training_arrays(dataset, config(0.5)), training_arrays(dataset, config(0.5))
    np.testing.assert_array_equal(first["val"][0], again["val"][0])


def test_a_re_split_keeps_each_patient_on_one_side(tmp_path):
    # 40 images of 20 patients per class (two images each).
    root = write_folder_dataset(tmp_path / "pairs", splits=(None,), per_class=40, patients_per_class=20, size=32)
    import_dataset(root, name="pairs", config=DataConfig(image_size=32))
    dataset = load_dataset("pairs")
    manifest = dataset.manifest
    patient_of = {}
    for split in ("train", "val"):
        rows = manifest[manifest["split"] == split]["patient_id"].tolist()
        for image, patient in zip(dataset.images(split), rows, strict=True):
            patient_of[hashlib.sha256(image.tobytes()).hexdigest()] = patient
    arrays = training_arrays(dataset, config(0.5))

    def patients(split):
        return {patient_of[hashlib.sha256(image.tobytes()).hexdigest()] for image in arrays[split][0]}

    assert patients("train") and patients("val") and not patients("train") & patients("val")
    assert len(arrays["train"][0]) + len(arrays["val"][0]) == len(patient_of)
    # About half of each class's images in validation (whole patients of two images each).
    train_counts, val_counts = class_counts(arrays["train"][1]), class_counts(arrays["val"][1])
    for label in (0, 1):
        assert val_counts[label] % 2 == 0 and abs(val_counts[label] - train_counts[label]) <= 2


def test_cxr_train_validation_fraction_is_recorded_as_validation_n(one_image_per_patient, tmp_path):
    from cxr.cli import main

    run_dir = tmp_path / "run"
    status = main(["train", one_image_per_patient, "--model", "fast", "--epochs", "1", "--batch-size", "16",
                   "--max-batches", "1", "--no-augmentation", "--quiet", "--validation-fraction", "0.5",
                   "--run-dir", str(run_dir)])
    assert status == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["validation"]["n"] == 34  # 17 per class; at the import's 0.10 it is 8: about 4x more
    assert metrics["test"]["n"] == 12
