"""The one patient-grouped splitter, and the check that stored splits share no patient or image.

``assign_splits`` decides which rows of a manifest go to train, validation (and test): the import uses it
to carve ``datasets/<name>/``, and training uses it again (``cxr.pipeline.training_arrays``) when it is
asked for another validation fraction than the import's, or when a data set has no "val" split. One
function, so that a patient is never on two sides whichever path made the split.
"""

from __future__ import annotations

import numpy as np

from cxr.config import CLASS_NAMES
from cxr.errors import DatasetError


def assign_splits(manifest, *, validation_fraction: float, seed: int | None, test_fraction: float = 0.0,
                  make_test: bool = False):
    """Patient-grouped, class-stratified split of the rows of ``manifest`` that are not already "test".

    ``manifest``: a ``pandas.DataFrame`` with columns ``label`` (0/1), ``patient_id`` and ``split``
    ("train", "val", "test" or None). Rows in "val" are folded into the pool first. Each patient goes wholly
    to one split; per class, patients (shuffled with ``seed``) are moved to the new split until that class's
    share of images reaches the fraction (so ``ceil(fraction × images)`` with one image per patient), always
    leaving one patient in train. With ``make_test``, test is carved first at ``test_fraction``. Returns the
    new split of every row (a ``pandas.Series`` aligned with ``manifest``). Raises ``DatasetError`` when a
    class has fewer than two patients to split.
    """
    split = manifest["split"].where(manifest["split"] == "test", "train").copy()
    rng = np.random.default_rng(seed)

    def carve(pool_mask, fraction: float, target: str) -> None:
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


def leakage_report(dataset) -> dict:
    """Check a data set's stored splits (``dataset.manifest``, ``dataset.splits``): patients and identical
    images shared between splits (both must be 0), and duplicates within a split."""
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


__all__ = ["assign_splits", "leakage_report"]
