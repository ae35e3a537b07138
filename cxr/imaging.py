"""Decode one image (JPEG, PNG, BMP, TIFF or DICOM) into a ``uint8`` grayscale array, with guards.

Every image that enters the project, from an upload, a folder or a zip, passes through
``decode_image``. It returns the full-resolution picture as a C-contiguous ``(h, w) uint8`` array
(0 = black) and an ``ImageInfo`` describing what the file was. Bad input raises
``cxr.errors.ImageError`` naming the file, what was wrong, and what is accepted.

Decisions, each with its reason:

- **Size guard before decoding.** The width and height are read from the file header (PNG IHDR, JPEG
  SOFn marker, BMP header, TIFF first IFD, DICOM Rows/Columns) and an image with more than
  ``max_pixels`` pixels is refused before any pixel is decoded, so a decompression bomb (a few KB that
  would expand to gigabytes) costs microseconds, not memory.
- **Images under ``MIN_IMAGE_SIDE`` (8) pixels on a side are refused**: nothing that small can be a
  chest X-ray (icons, tracking pixels, a wrong file), and a clear message beats a meaningless score.
- **Truncated files are refused**, not filled with gray: a JPEG must have its end-of-image marker
  after its scan data, a PNG must reach its IEND chunk. A half-uploaded X-ray would otherwise be
  scored as if the bottom of the lungs were gray fog.
- **More than 8 bits** (16-bit PNG/TIFF, 12-bit JPEG, DICOM) are scaled to 8 bits by the image's own
  range (min-max), so a 12-bit image stored in a 16-bit PNG does not come out almost black.
- **Color** is converted to gray with OpenCV's luminance weights. ``is_color_photo`` is set when the
  mean chroma (max minus min channel, 0-255) reaches ``COLOR_PHOTO_CHROMA``: an RGB copy of a gray
  X-ray has chroma 0 (or 1-2 after JPEG), a photograph has tens.
- **Alpha is composited on black** (pixel x alpha): transparent areas become black, like the film
  outside the body, instead of showing whatever color hides under the transparency.
- **Palette** PNG/BMP/TIFF images are expanded to color by OpenCV, then treated as color.
- **DICOM**: the modality LUT (rescale) and then the VOI LUT or window are applied as the file asks,
  MONOCHROME1 is inverted so bones are bright like MONOCHROME2, and the first frame of a multi-frame
  file is used. JPEG baseline and JPEG 2000 pixel data decode through pylibjpeg.
- **JPEG EXIF orientation** is applied (as a viewer would show the picture); ``width``/``height`` in
  ``ImageInfo`` are those of the returned pixels.

OpenCV and pydicom are imported inside the functions that use them, so ``import cxr.imaging`` is cheap.
This module reads the source and recognises the format; the decoders live in ``cxr.raster`` (JPEG, PNG, BMP,
TIFF) and ``cxr.dicom``, and what they share (``ImageInfo``, the size guard, 8-bit gray) in ``cxr.pixels``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cxr.dicom import decode_dicom, looks_like_dicom_dataset
from cxr.errors import ImageError
from cxr.pixels import (
    ACCEPTED,
    DEFAULT_MAX_PIXELS,
    MIN_IMAGE_SIDE,
    PNG_SIGNATURE,
    DecodedImage,
    ImageInfo,
    check_size,
    describe_bytes,
)
from cxr.raster import check_jpeg_complete, check_png_complete, decode_with_opencv, read_header

# --------------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------------


def decode_image(
    source: str | os.PathLike | bytes | bytearray | memoryview | BinaryIO,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = MIN_IMAGE_SIDE,
) -> DecodedImage:
    """Decode one image file into full-resolution ``(h, w) uint8`` grayscale.

    Args:
        source: a path (``str`` or ``os.PathLike``), the file's bytes, or a binary file-like object
            (anything with ``read()``, such as a Streamlit upload).
        name: the name used in messages and ``ImageInfo.name``; defaults to the file name of a path or
            of a file-like's ``name`` attribute, else ``"image"``.
        max_pixels: images with more than ``width * height`` pixels are refused from their header,
            before decoding.
        min_side: images with a side shorter than this are refused.

    Returns:
        ``DecodedImage`` with ``pixels`` ``(h, w) uint8`` C-contiguous, 0 = black, bones bright.

    Raises:
        ImageError: empty, unreadable, truncated, too large, too small, not one of JPEG, PNG, BMP, TIFF
            or DICOM, or a DICOM without pixel data. The message names the file.
    """
    data, name = _read_source(source, name)
    if len(data) == 0:
        raise ImageError(f"{name!r} is empty (0 bytes). Expected a {ACCEPTED} file; check that the "
                         f"upload or copy finished and try again.")
    kind = _sniff(data, name)
    if kind == "dicom":
        return decode_dicom(data, name, max_pixels, min_side)
    header = read_header(kind, data, name)
    check_size(header.width, header.height, name, max_pixels, min_side, header.format)
    if kind == "jpeg":
        check_jpeg_complete(data, name)
    elif kind == "png":
        check_png_complete(data, name)
    return decode_with_opencv(data, header, name, max_pixels, min_side)


def resize_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize a ``(h, w) uint8`` image to ``(size, size) uint8`` C-contiguous.

    The aspect ratio is not kept (the image is stretched), as the tutorial does: chest X-rays are
    roughly square and padding would waste input pixels. ``INTER_AREA`` is used whenever a side
    shrinks (it averages, so no aliasing or moire from rib edges); ``INTER_LINEAR`` when both sides
    grow (no overshoot halos around bright bone edges, unlike cubic).
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ImageError(f"resize_square: size must be a positive integer number of pixels; received {size!r}.")
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype != np.uint8 or 0 in pixels.shape:
        raise ImageError(f"resize_square expects a non-empty (h, w) uint8 grayscale array; received shape "
                         f"{pixels.shape} dtype {pixels.dtype}. Decode the image with decode_image first.")
    import cv2

    size = int(size)
    height, width = pixels.shape
    if (height, width) == (size, size):
        return np.ascontiguousarray(pixels).copy()
    shrinking = size < height or size < width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(pixels), (size, size), interpolation=interpolation)
    return np.ascontiguousarray(resized, dtype=np.uint8)


def load_image(
    source: str | os.PathLike | bytes | bytearray | memoryview | BinaryIO,
    size: int,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``source`` and resize it: returns ``(pixels (size, size) uint8, ImageInfo)``.

    ``ImageInfo.width``/``height`` keep the full-resolution size. Raises ``ImageError`` as
    ``decode_image`` does.
    """
    decoded = decode_image(source, name=name, max_pixels=max_pixels)
    return resize_square(decoded.pixels, size), decoded.info


# --------------------------------------------------------------------------------------------------
# Reading the source and recognizing the format
# --------------------------------------------------------------------------------------------------


def _read_source(source: Any, name: str | None) -> tuple[bytes, str]:
    """The file's bytes and the name to use in messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name or "image"
    if isinstance(source, (str, os.PathLike)):
        return _read_path(Path(source), name)
    if hasattr(source, "read"):
        return _read_stream(source, name)
    raise ImageError(f"decode_image expects a path, bytes or a binary file object; received "
                     f"{type(source).__name__}. Pass the file's path or its bytes.")


def _read_path(path: Path, name: str | None) -> tuple[bytes, str]:
    name = name or path.name or str(path)
    try:
        return path.read_bytes(), name
    except FileNotFoundError:
        raise ImageError(f"{name!r}: no such file ({str(path)!r}). Expected the path of a {ACCEPTED} "
                         f"file; check the path.") from None
    except IsADirectoryError:
        raise ImageError(f"{name!r} is a folder, not an image file ({str(path)!r}). Expected a "
                         f"{ACCEPTED} file.") from None
    except OSError as error:
        raise ImageError(f"{name!r} cannot be read ({error.strerror or error}). Expected a readable "
                         f"{ACCEPTED} file; check its permissions.") from None


def _read_stream(source: Any, name: str | None) -> tuple[bytes, str]:
    """A file-like's bytes (an upload, an open file); its own ``name`` when none is given."""
    source_name = getattr(source, "name", None)
    if name is None and isinstance(source_name, str) and source_name:
        name = Path(source_name).name or source_name
    name = name or "image"
    try:
        data = source.read()
    except Exception as error:  # a broken stream of any kind: report it as a bad image
        raise ImageError(f"{name!r} cannot be read ({error}). Expected a readable {ACCEPTED} file.") from None
    if isinstance(data, str):
        raise ImageError(f"{name!r} was opened in text mode; open it in binary mode ('rb') so its "
                         f"bytes can be decoded as a {ACCEPTED} image.")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"{name!r}: read() returned {type(data).__name__}, expected bytes of a "
                         f"{ACCEPTED} file.")
    return bytes(data), name


def _sniff(data: bytes, name: str) -> str:
    """The format from the magic bytes (and, for DICOM, the name): one of ``_FORMATS``."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if looks_like_dicom_dataset(data) or name.lower().endswith((".dcm", ".dicom")):
        return "dicom"
    raise ImageError(f"{name!r} is not an image this program can read ({describe_bytes(data)}). "
                     f"Accepted formats are {ACCEPTED}; export or convert the file to one of them.")



__all__ = ["decode_image", "resize_square", "load_image"]
