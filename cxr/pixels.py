"""What a decoded image is (``ImageInfo``, ``DecodedImage``), the limits every decoder applies, and the pixel
conversions the raster (``cxr.raster``) and DICOM (``cxr.dicom``) decoders share: the size guard, scaling any
depth to 8 bits by the image's own range, colour to gray with alpha composited on black, and the chroma that
tells a photograph from an X-ray. ``cxr.imaging.decode_image`` is the entry point.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxr.config import DataConfig
from cxr.errors import ImageError

ACCEPTED = "JPEG, PNG, BMP, TIFF or DICOM"
MIN_IMAGE_SIDE = 8  # smaller than 8 px on a side cannot be an X-ray; refuse with a clear message
COLOR_PHOTO_CHROMA = 20.0  # mean max-min channel difference (0-255) above which an image is a photo
DEFAULT_MAX_PIXELS = DataConfig.max_image_pixels  # 80 M: the largest real chest X-ray is ~4300 x 4300
_CHROMA_SAMPLE_SIDE = 256  # chroma is estimated on about 256 x 256 pixels: plenty for a mean, and fast
_FORMATS = ("jpeg", "png", "bmp", "tiff", "dicom")
_MODES = ("gray", "gray16", "rgb", "rgba", "palette", "monochrome1", "monochrome2")

# JPEG start-of-frame markers (C0-CF except DHT C4, JPG C8 and DAC CC) carry the image size.
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImageInfo:
    """What a decoded file was.

    ``width``/``height``: pixels of the decoded full-resolution image (before any resize).
    ``mode``: one of "gray", "gray16" (more than 8 bits of gray), "rgb", "rgba", "palette",
    "monochrome1", "monochrome2" (DICOM photometric interpretations). ``bit_depth``: bits per sample
    in the file (DICOM: BitsStored). ``body_part``, ``view_position``, ``modality``: DICOM
    BodyPartExamined, ViewPosition and Modality, else ``None``; ``patient_age``: DICOM PatientAge as
    written (e.g. "045Y", "006M"), else ``None``. ``is_color_photo``: the chroma is
    strong enough that the picture is likely a photograph, not an X-ray. ``num_frames``: frames in the
    file (only the first is decoded).
    """

    name: str
    format: str
    width: int
    height: int
    mode: str
    bit_depth: int
    body_part: str | None = None
    view_position: str | None = None
    modality: str | None = None
    is_color_photo: bool = False
    num_frames: int = 1
    patient_age: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-serializable dict of the fields."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image: ``pixels`` ``(h, w) uint8`` C-contiguous grayscale (0 = black) and its ``info``."""

    pixels: np.ndarray
    info: ImageInfo


def check_size(width: int, height: int, name: str, max_pixels: int, min_side: int, kind: str) -> None:
    if width * height > max_pixels:
        raise ImageError(f"{name!r} is {width} x {height} pixels ({width * height:,}), more than the "
                         f"{max_pixels:,} accepted (this guards against decompression bombs). Expected a "
                         f"{ACCEPTED} image up to {max_pixels:,} pixels; downscale it and try again.")
    if width < min_side or height < min_side:
        raise ImageError(f"{name!r} is only {width} x {height} pixels; an X-ray needs at least {min_side} "
                         f"x {min_side} (ideally a few hundred). This is probably not the intended file.")


def first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


def scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Any numeric ``(h, w[, c])`` array to ``uint8`` by its own range (min-max); uint8 is unchanged.

    A constant image keeps its relative level within its dtype's range (a flat 16-bit 65535 is white),
    so a uniform picture is not turned black by a zero range.
    """
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        values = np.where(finite, values, 0.0)
    low, high = float(values.min()), float(values.max())
    if high > low:
        scaled = (values - low) * (255.0 / (high - low))
    elif np.issubdtype(array.dtype, np.integer):
        limits = np.iinfo(array.dtype)
        scaled = np.full(values.shape, 255.0 * (low - limits.min) / (limits.max - limits.min), np.float32)
    else:
        scaled = np.zeros(values.shape, np.float32)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_gray_uint8(array: np.ndarray, *, order: str = "bgr") -> tuple[np.ndarray, bool]:
    """``(h, w)``, ``(h, w, 3)`` or ``(h, w, 4)`` of any depth to ``((h, w) uint8, is_color_photo)``.

    ``order`` is "bgr" for OpenCV arrays and "rgb" for pydicom ones. Alpha is composited on black.
    """
    import cv2

    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return np.ascontiguousarray(scale_to_uint8(array)), False
    if array.ndim != 3 or array.shape[2] not in (2, 3, 4):
        raise ImageError(f"unexpected decoded image shape {array.shape}; expected (h, w), (h, w, 3) or "
                         f"(h, w, 4).")
    if array.shape[2] in (2, 4):  # gray+alpha or color+alpha: composite on black
        alpha = array[:, :, -1].astype(np.float32) / float(np.iinfo(array.dtype).max
                                                         if np.issubdtype(array.dtype, np.integer) else 1.0)
        color = array[:, :, :-1].astype(np.float32) * alpha[:, :, None]
        if array.shape[2] == 2:
            return np.ascontiguousarray(scale_to_uint8(color[:, :, 0].astype(array.dtype))), False
        array = color.astype(array.dtype)
    color8 = scale_to_uint8(array)  # one range for all three channels, so hue is kept
    is_color_photo = mean_chroma(color8) >= COLOR_PHOTO_CHROMA
    code = cv2.COLOR_BGR2GRAY if order == "bgr" else cv2.COLOR_RGB2GRAY
    gray = cv2.cvtColor(np.ascontiguousarray(color8), code)
    return np.ascontiguousarray(gray, dtype=np.uint8), bool(is_color_photo)


def mean_chroma(color8: np.ndarray) -> float:
    """Mean of (max channel - min channel) over about 256 x 256 sampled pixels of ``(h, w, 3) uint8``."""
    step_y = max(1, color8.shape[0] // _CHROMA_SAMPLE_SIDE)
    step_x = max(1, color8.shape[1] // _CHROMA_SAMPLE_SIDE)
    sample = color8[::step_y, ::step_x]
    first, second, third = sample[:, :, 0], sample[:, :, 1], sample[:, :, 2]
    # Element-wise maximum/minimum of the three planes: ~30x faster than max(axis=2) over a 3-long axis.
    chroma = np.maximum(np.maximum(first, second), third) - np.minimum(np.minimum(first, second), third)
    return float(chroma.mean(dtype=np.float64))


def describe_bytes(data: bytes) -> str:
    """A short guess of what unrecognized bytes are, for the error message."""
    known = {b"GIF8": "it looks like a GIF", b"RIFF": "it looks like a RIFF file (WebP, WAV, AVI)",
             b"%PDF": "it looks like a PDF", b"PK\x03\x04": "it looks like a zip archive",
             b"II+\x00": "it looks like a BigTIFF, which is not supported",
             b"\x00\x00\x00\x0cjP": "it looks like a JPEG 2000 file"}
    for magic, text in known.items():
        if data.startswith(magic):
            return text
    if data.startswith(b"\xff\xd8"):
        return "it starts like a JPEG but its header is damaged"
    if data.startswith(PNG_SIGNATURE[:4]):
        return "it starts like a PNG but its signature is damaged"
    head = data[:512]
    try:
        text = head.decode("utf-8")
        if text and all(character.isprintable() or character in "\r\n\t" for character in text):
            return f"it looks like text: {text[:40]!r}"
    except UnicodeDecodeError:
        pass
    return f"it starts with bytes {data[:8].hex(' ')}"


__all__ = ["ImageInfo", "DecodedImage", "ACCEPTED", "MIN_IMAGE_SIDE", "COLOR_PHOTO_CHROMA", "DEFAULT_MAX_PIXELS",
           "check_size", "first_line", "scale_to_uint8", "to_gray_uint8", "mean_chroma", "describe_bytes"]
