"""Small synthetic X-rays and data-set folders for tests (imported as ``helpers_data``; not a conftest,
so that tests/e2e/conftest.py cannot shadow it)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def synthetic_xray(label: int, size: int = 48, seed: int = 0) -> np.ndarray:
    """A small fake X-ray (size, size) uint8: two dark lungs; pneumonia (label 1) adds bright blotches."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = 170 + 20 * rng.standard_normal((size, size))
    for centre in (0.3, 0.7):
        lung = ((xx - centre) / 0.17) ** 2 + ((yy - 0.5) / 0.32) ** 2 < 1
        image[lung] -= 110
    if label == 1:
        for _ in range(3):
            cx, cy = rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.7)
            image[((xx - cx) ** 2 + (yy - cy) ** 2) < 0.006] += 90
    return np.clip(image, 0, 255).astype(np.uint8)


def write_folder_dataset(root: Path, *, splits=("train", "test"), per_class: int = 12, size: int = 48,
                         class_names=("normal", "pneumonia"), patients_per_class: int | None = None,
                         suffix: str = ".png") -> Path:
    """Write a tiny data set in the tutorial's layout: root/<split>/<class>/<file>.

    File names follow Kermany's patterns so patient ids are parsed: normal ``IM-PPPP-000N``,
    pneumonia ``personP_bacteria_N``. With ``patients_per_class`` several images share a patient.
    """
    import cv2

    patients = patients_per_class or per_class
    counter = 0
    for split_index, split in enumerate(splits):
        for label, class_name in enumerate(class_names):
            folder = root / split / class_name if split else root / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                counter += 1
                patient = 1000 * split_index + index % patients
                name = (f"IM-{patient:04d}-{index:04d}{suffix}" if label == 0
                        else f"person{patient}_bacteria_{counter}{suffix}")
                image = synthetic_xray(label, size, seed=counter)
                ok, encoded = cv2.imencode(suffix, image)
                assert ok  # test helper: encoding a valid array cannot fail
                (folder / name).write_bytes(encoded.tobytes())
    return root


def make_dicom(pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
               with_pixels: bool = True, preamble: bool = True, **attributes) -> bytes:
    """A DICOM file in memory (explicit VR little endian) holding ``pixels`` ((h, w) or (frames, h, w))."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "CR"
    dataset.BodyPartExamined = "CHEST"
    dataset.ViewPosition = "PA"
    dataset.Rows, dataset.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        dataset.NumberOfFrames = pixels.shape[0]
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = pixels.dtype.itemsize * 8
    dataset.BitsStored = bits_stored or pixels.dtype.itemsize * 8
    dataset.HighBit = dataset.BitsStored - 1
    dataset.PixelRepresentation = 0
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    if with_pixels:
        dataset.PixelData = np.ascontiguousarray(pixels).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    return data if preamble else data[132:]  # without the 128-byte preamble and "DICM"
