"""External validation: a trained model scored on labelled images it has never seen.

``labelled_folder_files`` reads a folder of ``normal/`` and ``pneumonia/`` sub-folders; ``external_validation``
evaluates a ``cxr.predict.Predictor`` on such a folder or on an imported data set's test split with the
model's own threshold and temperature (nothing is refitted on external data).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cxr.calibration import sigmoid
from cxr.config import CLASS_NAMES
from cxr.errors import CxrError
from cxr.sources import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from cxr.predict import Predictor

def labelled_folder_files(folder) -> list[tuple[Path, int]]:
    """``(path, label)`` of every image in ``folder/{normal,pneumonia}/`` (class names case-insensitive,
    sub-folders included), sorted. A folder whose only class folders sit under one ``test/`` is accepted.

    Raises ``CxrError`` when a class folder is missing or holds no image.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CxrError(
            f"{str(folder)!r} is not a folder. Expected a folder holding normal/ and pneumonia/ "
            f"sub-folders of labelled images."
        )

    def class_folders(root: Path) -> dict[str, Path]:
        return {
            child.name.lower(): child
            for child in root.iterdir()
            if child.is_dir() and child.name.lower() in CLASS_NAMES
        }

    found = class_folders(folder)
    if not found:
        nested = [child for child in folder.iterdir() if child.is_dir() and child.name.lower() == "test"]
        if len(nested) == 1:
            folder, found = nested[0], class_folders(nested[0])
    missing = [name for name in CLASS_NAMES if name not in found]
    if missing:
        present = sorted(child.name for child in folder.iterdir() if child.is_dir())
        raise CxrError(
            f"{str(folder)!r} has no {' or '.join(missing)} folder (sub-folders found: {present or 'none'}). "
            f"Expected normal/ and pneumonia/ sub-folders (any case) of labelled images."
        )
    files = []
    for label, name in enumerate(CLASS_NAMES):
        class_files = sorted(
            path
            for path in found[name].rglob("*")
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
        )
        if not class_files:
            raise CxrError(
                f"{str(found[name])!r} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))}). "
                f"Put the {name} images there."
            )
        files += [(path, label) for path in class_files]
    return files


def external_validation(predictor: Predictor, source, *, progress=None) -> dict[str, Any]:
    """Evaluate ``predictor`` on a labelled folder or an imported data set's test split (external validation).

    ``source``: a folder (``normal/``, ``pneumonia/``) or an imported data set name/path. Uses the
    predictor's own threshold and temperature (nothing is refitted on external data). Returns
    ``{"name", "source", "metrics": binary_metrics(...), "errors": [{"file", "error"}], "warnings":
    {file: [..]}, "predictions": DataFrame(file, y_true, y_score, y_score_raw, population, population_score),
    "population": population_summary(...)}``; unreadable files are listed in ``errors`` and left out.
    Metrics cover every readable image; ``population`` adds the fraction outside the model's training
    population and the metrics of the images inside it.
    """
    import pandas as pd

    from cxr.evaluation import binary_metrics

    path = Path(str(source)).expanduser()
    errors, warnings_by_file = [], {}
    if path.is_dir() and not (path / "dataset.json").is_file():
        files = labelled_folder_files(path)
        kept_files, labels, images, infos, detector_images = [], [], [], [], []
        for done, (file, label) in enumerate(files, start=1):
            if progress is not None:
                progress(done, len(files))
            try:
                pixels, info, messages, detector_image = predictor._prepare_both(file, file.name)
            except CxrError as error:
                errors.append({"file": str(file), "error": str(error)})
                continue
            if messages:
                warnings_by_file[str(file)] = messages
            kept_files.append(str(file.relative_to(path)))
            labels.append(label)
            images.append(pixels)
            infos.append(info)
            detector_images.append(detector_image)
        name = path.name
        if not images:
            raise CxrError(
                f"No image of {str(path)!r} could be read ({len(errors)} errors; first: "
                f"{errors[0]['error'] if errors else 'none'})."
            )
        images = np.stack(images)
    else:
        from cxr.datasets import load_dataset

        dataset = load_dataset(str(source), verify=False)
        split = "test" if "test" in dataset.splits else dataset.splits[-1]
        images, labels = dataset.images(split), dataset.labels(split)
        infos = [None] * len(labels)
        # Cached images are all that is left of the files: the detector sees them resampled from there.
        detector_images = ([predictor.population.input_image(image) for image in images]
                           if predictor.population is not None else None)
        if dataset.image_size != predictor.image_size:
            from cxr.imaging import resize_square

            images = np.stack([resize_square(image, predictor.image_size) for image in images])
        part = dataset.manifest[dataset.manifest["split"] == split]
        kept_files = (
            part["file"].astype(str).tolist()
            if len(part) == len(labels)
            else [f"{split}/{index}" for index in range(len(labels))]
        )
        name = f"{dataset.name}-{split}"
    labels = np.asarray(labels, dtype=np.int64)
    logits = predictor.raw_logits(images)
    raw, calibrated = sigmoid(logits), sigmoid(logits / predictor.temperature)
    verdicts = predictor.population_verdicts(infos, detector_images, images=images)
    return {
        "name": name,
        "source": str(source),
        "metrics": binary_metrics(labels, calibrated, predictor.threshold),
        "errors": errors,
        "warnings": warnings_by_file,
        "predictions": pd.DataFrame({"file": kept_files, "y_true": labels, "y_score": calibrated, "y_score_raw": raw,
                                     "population": [verdict.status for verdict in verdicts],
                                     "population_score": [verdict.score for verdict in verdicts]}),
        "population": population_summary(labels, calibrated, predictor.threshold, verdicts,
                                         detector=predictor.population is not None),
    }


def population_summary(labels: np.ndarray, scores: np.ndarray, threshold: float, verdicts: list, *,
                       detector: bool) -> dict[str, Any]:
    """``{"num_images", "num_outside", "fraction_outside", "detector", "in_population": binary_metrics | None,
    "note"}``: how many images the population check flags, and the metrics of the images it keeps."""
    from cxr.evaluation import binary_metrics

    outside = np.array([verdict.outside for verdict in verdicts], dtype=bool)
    inside = ~outside
    summary: dict[str, Any] = {
        "num_images": int(len(verdicts)), "num_outside": int(outside.sum()),
        "fraction_outside": float(outside.mean()) if len(verdicts) else 0.0,
        "detector": bool(detector),
        "in_population": None, "note": "",
    }
    kept = np.asarray(labels)[inside]
    if len(np.unique(kept)) == 2:
        summary["in_population"] = binary_metrics(kept, np.asarray(scores)[inside], threshold)
    else:
        summary["note"] = (f"no metrics for the in-population part: it holds {int(inside.sum())} image(s) of "
                           f"{len(np.unique(kept))} class(es); both classes are needed")
    return summary


__all__ = ["labelled_folder_files", "external_validation", "population_summary"]
