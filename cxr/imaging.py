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
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


@dataclass
class _Header:
    """What the header says before any pixel is decoded."""

    format: str
    width: int
    height: int
    bit_depth: int = 8
    mode: str | None = None  # set when the header knows better than the decoded array (palette)


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
        return _decode_dicom(data, name, max_pixels, min_side)
    header = _read_header(kind, data, name)
    _check_size(header.width, header.height, name, max_pixels, min_side, header.format)
    if kind == "jpeg":
        _check_jpeg_complete(data, name)
    elif kind == "png":
        _check_png_complete(data, name)
    return _decode_with_opencv(data, header, name, max_pixels, min_side)


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
        path = Path(source)
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
    if hasattr(source, "read"):
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
    raise ImageError(f"decode_image expects a path, bytes or a binary file object; received "
                     f"{type(source).__name__}. Pass the file's path or its bytes.")


def _looks_like_dicom_dataset(data: bytes) -> bool:
    """A DICOM stream without the 128-byte preamble starts with a little-endian tag of group 0002
    (file meta) or 0008 (identifying information), then an element number; a VR or length follows."""
    if len(data) < 8:
        return False
    group, element = struct.unpack("<HH", data[:4])
    return group in (0x0002, 0x0008) and element < 0x0200


def _sniff(data: bytes, name: str) -> str:
    """The format from the magic bytes (and, for DICOM, the name): one of ``_FORMATS``."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if _looks_like_dicom_dataset(data) or name.lower().endswith((".dcm", ".dicom")):
        return "dicom"
    raise ImageError(f"{name!r} is not an image this program can read ({_describe(data)}). "
                     f"Accepted formats are {ACCEPTED}; export or convert the file to one of them.")


def _describe(data: bytes) -> str:
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
    if data.startswith(_PNG_SIGNATURE[:4]):
        return "it starts like a PNG but its signature is damaged"
    head = data[:512]
    try:
        text = head.decode("utf-8")
        if text and all(character.isprintable() or character in "\r\n\t" for character in text):
            return f"it looks like text: {text[:40]!r}"
    except UnicodeDecodeError:
        pass
    return f"it starts with bytes {data[:8].hex(' ')}"


# --------------------------------------------------------------------------------------------------
# Headers: the size before decoding
# --------------------------------------------------------------------------------------------------


def _read_header(kind: str, data: bytes, name: str) -> _Header:
    reader = {"png": _png_header, "jpeg": _jpeg_header, "bmp": _bmp_header, "tiff": _tiff_header}[kind]
    try:
        return reader(data, name)
    except ImageError:
        raise
    except (struct.error, IndexError, ValueError):
        raise ImageError(f"{name!r}: the {kind.upper()} header is damaged or truncated, so its size cannot "
                         f"be read. Expected a complete {ACCEPTED} file; re-export or re-upload it.") from None


def _png_header(data: bytes, name: str) -> _Header:
    # Signature (8), then the IHDR chunk: length (4), b"IHDR", width, height, depth, color type, ...
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ValueError("no IHDR")
    width, height, bit_depth, color_type = struct.unpack(">IIBB", data[16:26])
    mode = {0: "gray", 2: "rgb", 3: "palette", 4: "gray", 6: "rgba"}.get(color_type)
    if mode is None:
        raise ValueError(f"PNG color type {color_type}")
    if mode == "gray" and bit_depth == 16:
        mode = "gray16"
    return _Header("png", width, height, bit_depth, mode)


def _jpeg_header(data: bytes, name: str) -> _Header:
    """Walk the marker segments from SOI to the first SOFn (segments carry their length, so an EXIF
    thumbnail inside APP1 is skipped, not mistaken for the image)."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise ValueError("marker expected")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            break
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        if marker in _JPEG_SOF_MARKERS:
            precision, height, width, components = struct.unpack(">BHHB", data[position + 4:position + 10])
            if height == 0:
                raise ImageError(f"{name!r}: the JPEG does not state its height in its frame header (a "
                                 f"DNL marker), which is not supported. Re-save it as a standard JPEG or PNG.")
            mode = "gray" if components == 1 else "rgb"
            if mode == "gray" and precision > 8:
                mode = "gray16"
            return _Header("jpeg", width, height, precision, mode)
        position += 2 + length
    raise ImageError(f"{name!r}: the JPEG has no frame header (SOF marker), so it holds no image or is "
                     f"truncated. Expected a complete {ACCEPTED} file; re-export or re-upload it.")


def _bmp_header(data: bytes, name: str) -> _Header:
    (dib_size,) = struct.unpack("<I", data[14:18])
    if dib_size == 12:  # BITMAPCOREHEADER (OS/2): 16-bit sizes
        width, height, _, bit_count = struct.unpack("<HHHH", data[18:26])
    else:
        width, height, _, bit_count = struct.unpack("<iiHH", data[18:30])
    height = abs(height)  # negative height means rows stored top-down
    if width < 0:
        raise ValueError("negative width")
    mode = "palette" if bit_count <= 8 else ("rgba" if bit_count == 32 else "rgb")
    return _Header("bmp", width, height, bit_count, mode)


def _tiff_header(data: bytes, name: str) -> _Header:
    """Size, bits and photometric interpretation from the first image file directory (IFD)."""
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[offset:offset + 2])
    values: dict[int, int] = {}
    for index in range(count):
        entry = data[offset + 2 + 12 * index: offset + 14 + 12 * index]
        tag, value_type, value_count = struct.unpack(order + "HHI", entry[:8])
        if value_type == 3:  # SHORT: the value sits in the first two bytes of the field
            (value,) = struct.unpack(order + "H", entry[8:10])
        elif value_type == 4:  # LONG
            (value,) = struct.unpack(order + "I", entry[8:12])
        else:
            continue
        values[tag] = value
    if 256 not in values or 257 not in values:
        raise ValueError("no ImageWidth or ImageLength")
    # BitsPerSample with several samples is an offset to a list; all our cases share one depth, and
    # for more than 2 samples the field holds an offset, so read the first value only where it is inline.
    samples = values.get(277, 1)
    bit_depth = values.get(258, 1) if samples <= 2 else 8
    if samples > 2 and 258 in values:
        try:
            (bit_depth,) = struct.unpack(order + "H", data[values[258]:values[258] + 2])
        except struct.error:
            bit_depth = 8
    photometric = values.get(262, 1)
    if photometric == 3:
        mode = "palette"
    elif samples >= 4:
        mode = "rgba"
    elif samples == 3:
        mode = "rgb"
    else:
        mode = "gray16" if bit_depth > 8 else "gray"
    return _Header("tiff", values[256], values[257], bit_depth, mode)


def _check_size(width: int, height: int, name: str, max_pixels: int, min_side: int, kind: str) -> None:
    if width * height > max_pixels:
        raise ImageError(f"{name!r} is {width} x {height} pixels ({width * height:,}), more than the "
                         f"{max_pixels:,} accepted (this guards against decompression bombs). Expected a "
                         f"{ACCEPTED} image up to {max_pixels:,} pixels; downscale it and try again.")
    if width < min_side or height < min_side:
        raise ImageError(f"{name!r} is only {width} x {height} pixels; an X-ray needs at least {min_side} "
                         f"x {min_side} (ideally a few hundred). This is probably not the intended file.")


def _check_jpeg_complete(data: bytes, name: str) -> None:
    """Refuse a JPEG without its end-of-image marker after the start of its scan data.

    Inside entropy-coded data a 0xFF byte is always followed by 0x00 or a restart marker, so an
    FF D9 after the first scan is the real end of the image (trailing bytes after it are tolerated).
    """
    start_of_scan = _jpeg_first_scan(data)
    end_of_image = data.rfind(b"\xff\xd9")
    if start_of_scan < 0 or end_of_image < start_of_scan:
        raise ImageError(f"{name!r} is a truncated JPEG: its end-of-image marker is missing, so part of the "
                         f"picture is lost. Expected a complete {ACCEPTED} file; re-export or re-upload it.")


def _jpeg_first_scan(data: bytes) -> int:
    """Offset of the first SOS marker, walking segments like ``_jpeg_header``; -1 when none."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return -1
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        if marker == 0xDA:
            return position
        if marker == 0xD9:
            return -1
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        position += 2 + length
    return -1


def _check_png_complete(data: bytes, name: str) -> None:
    """Walk the chunks (length, type, data, CRC) and require the IEND chunk inside the file."""
    position = 8
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        chunk_type = data[position + 4:position + 8]
        end = position + 12 + length
        if end > len(data):
            break
        if chunk_type == b"IEND":
            return
        position = end
    raise ImageError(f"{name!r} is a truncated PNG: it ends before its IEND chunk, so part of the picture "
                     f"is lost. Expected a complete {ACCEPTED} file; re-export or re-upload it.")


# --------------------------------------------------------------------------------------------------
# Decoding with OpenCV (JPEG, PNG, BMP, TIFF)
# --------------------------------------------------------------------------------------------------


def _decode_with_opencv(data: bytes, header: _Header, name: str, max_pixels: int, min_side: int) -> DecodedImage:
    import cv2

    buffer = np.frombuffer(data, dtype=np.uint8)
    if header.format == "jpeg":
        # ANYCOLOR keeps gray JPEGs one channel, ANYDEPTH keeps 12-bit ones; without UNCHANGED OpenCV
        # applies the EXIF orientation (JPEGs have no alpha to lose).
        flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
    else:
        flags = cv2.IMREAD_UNCHANGED  # keep 16 bits and alpha
    try:
        array = cv2.imdecode(buffer, flags)
    except cv2.error as error:
        raise ImageError(f"{name!r}: the {header.format.upper()} data cannot be decoded ({_first_line(error)}). "
                         f"Expected a valid {ACCEPTED} file; re-export or re-upload it.") from None
    if array is None or array.size == 0:
        raise ImageError(f"{name!r}: the {header.format.upper()} data cannot be decoded (damaged or "
                         f"truncated, or a variant OpenCV does not support). Expected a valid {ACCEPTED} "
                         f"file; re-export it as an 8-bit PNG or JPEG.")
    height, width = array.shape[:2]
    _check_size(width, height, name, max_pixels, min_side, header.format)
    channels = 1 if array.ndim == 2 else array.shape[2]
    if header.mode is not None:
        mode = header.mode
    else:  # pragma: no cover - every header reader sets a mode
        mode = {1: "gray", 3: "rgb", 4: "rgba"}.get(channels, "rgb")
    if mode == "gray" and array.dtype != np.uint8:
        mode = "gray16"
    pixels, is_color_photo = _to_gray_uint8(array)
    info = ImageInfo(name=name, format=header.format, width=int(width), height=int(height), mode=mode,
                     bit_depth=int(header.bit_depth), is_color_photo=is_color_photo)
    return DecodedImage(pixels=pixels, info=info)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


def _scale_to_uint8(array: np.ndarray) -> np.ndarray:
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


def _to_gray_uint8(array: np.ndarray, *, order: str = "bgr") -> tuple[np.ndarray, bool]:
    """``(h, w)``, ``(h, w, 3)`` or ``(h, w, 4)`` of any depth to ``((h, w) uint8, is_color_photo)``.

    ``order`` is "bgr" for OpenCV arrays and "rgb" for pydicom ones. Alpha is composited on black.
    """
    import cv2

    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return np.ascontiguousarray(_scale_to_uint8(array)), False
    if array.ndim != 3 or array.shape[2] not in (2, 3, 4):
        raise ImageError(f"unexpected decoded image shape {array.shape}; expected (h, w), (h, w, 3) or "
                         f"(h, w, 4).")
    if array.shape[2] in (2, 4):  # gray+alpha or color+alpha: composite on black
        alpha = array[:, :, -1].astype(np.float32) / float(np.iinfo(array.dtype).max
                                                         if np.issubdtype(array.dtype, np.integer) else 1.0)
        color = array[:, :, :-1].astype(np.float32) * alpha[:, :, None]
        if array.shape[2] == 2:
            return np.ascontiguousarray(_scale_to_uint8(color[:, :, 0].astype(array.dtype))), False
        array = color.astype(array.dtype)
    color8 = _scale_to_uint8(array)  # one range for all three channels, so hue is kept
    is_color_photo = _mean_chroma(color8) >= COLOR_PHOTO_CHROMA
    code = cv2.COLOR_BGR2GRAY if order == "bgr" else cv2.COLOR_RGB2GRAY
    gray = cv2.cvtColor(np.ascontiguousarray(color8), code)
    return np.ascontiguousarray(gray, dtype=np.uint8), bool(is_color_photo)


def _mean_chroma(color8: np.ndarray) -> float:
    """Mean of (max channel - min channel) over about 256 x 256 sampled pixels of ``(h, w, 3) uint8``."""
    step_y = max(1, color8.shape[0] // _CHROMA_SAMPLE_SIDE)
    step_x = max(1, color8.shape[1] // _CHROMA_SAMPLE_SIDE)
    sample = color8[::step_y, ::step_x]
    first, second, third = sample[:, :, 0], sample[:, :, 1], sample[:, :, 2]
    # Element-wise maximum/minimum of the three planes: ~30x faster than max(axis=2) over a 3-long axis.
    chroma = np.maximum(np.maximum(first, second), third) - np.minimum(np.minimum(first, second), third)
    return float(chroma.mean(dtype=np.float64))


# --------------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------------


def _dicom_text(dataset: Any, keyword: str) -> str | None:
    value = dataset.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _decode_dicom(data: bytes, name: str, max_pixels: int, min_side: int) -> DecodedImage:
    """Decode a DICOM file; any unexpected failure in pydicom on malformed input becomes ``ImageError``."""
    try:
        return _decode_dicom_unguarded(data, name, max_pixels, min_side)
    except (ImageError, MemoryError):
        raise
    except Exception as error:  # pydicom parses elements lazily, so malformed ones fail late, in any type
        raise ImageError(f"{name!r} is a damaged DICOM file ({type(error).__name__}: {_first_line(error)}). "
                         f"Expected a valid {ACCEPTED} file; export the image again from the viewer or "
                         f"PACS.") from None


def _decode_dicom_unguarded(data: bytes, name: str, max_pixels: int, min_side: int) -> DecodedImage:
    import pydicom

    # One read: pydicom keeps pixel data as the (compressed) bytes already in memory and decodes
    # nothing, so Rows/Columns can be checked against max_pixels before any pixel is expanded.
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        rows, columns = dataset.get("Rows"), dataset.get("Columns")
    except Exception as error:  # pydicom raises many types (InvalidDicomError, struct, KeyError) on garbage
        raise ImageError(f"{name!r} is not a readable DICOM file ({_first_line(error)}). Expected a "
                         f"{ACCEPTED} file; export the image again from the viewer or PACS.") from None
    has_pixels = any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if rows is None or columns is None:
        if has_pixels:
            raise ImageError(f"{name!r}: the DICOM file has pixel data but no Rows/Columns, so its size is "
                             f"unknown. Expected an image DICOM; export the image again.")
        if len(dataset) == 0 or not (data[128:132] == b"DICM" or _looks_like_dicom_dataset(data)):
            raise ImageError(f"{name!r} is not an image this program can read ({_describe(data)}). "
                             f"Accepted formats are {ACCEPTED}; export or convert the file to one of them.")
        raise ImageError(f"{name!r} is a DICOM file without pixel data (for example a structured report "
                         f"or a study description), so there is no image to read. Expected a DICOM "
                         f"image; export the X-ray image itself.")
    try:
        rows, columns = int(rows), int(columns)
    except (TypeError, ValueError):
        raise ImageError(f"{name!r}: the DICOM Rows/Columns ({rows!r}, {columns!r}) are not numbers. "
                         f"Expected an image DICOM; export the image again.") from None
    _check_size(columns, rows, name, max_pixels, min_side, "dicom")
    if not has_pixels:
        raise ImageError(f"{name!r} is a DICOM file without pixel data (it has a {columns} x {rows} header "
                         f"but no PixelData element), so there is no image to read. Expected a DICOM image; "
                         f"export the X-ray image itself.")
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        num_frames = max(1, int(dataset.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        num_frames = 1
    bit_depth = dataset.get("BitsStored") or dataset.get("BitsAllocated") or 8
    try:
        bit_depth = int(bit_depth)
    except (TypeError, ValueError):
        bit_depth = 8

    _ensure_transfer_syntax(dataset)
    array = _dicom_first_frame(dataset, name)
    if photometric in ("MONOCHROME1", "MONOCHROME2") and array.ndim == 2:
        pixels = _dicom_grayscale(array, dataset, photometric == "MONOCHROME1")
        mode, is_color_photo = photometric.lower(), False
    else:
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            try:
                array = apply_color_lut(array, dataset)
            except Exception as error:
                raise ImageError(f"{name!r}: the DICOM palette cannot be applied ({_first_line(error)}). "
                                 f"Export the image as grayscale.") from None
            mode = "palette"
        else:
            mode = "rgb"
        pixels, is_color_photo = _to_gray_uint8(array, order="rgb")  # pydicom returns RGB order
    height, width = pixels.shape
    info = ImageInfo(name=name, format="dicom", width=int(width), height=int(height), mode=mode,
                     bit_depth=bit_depth, body_part=_dicom_text(dataset, "BodyPartExamined"),
                     view_position=_dicom_text(dataset, "ViewPosition"),
                     modality=_dicom_text(dataset, "Modality"), is_color_photo=is_color_photo,
                     num_frames=num_frames, patient_age=_dicom_text(dataset, "PatientAge"))
    return DecodedImage(pixels=np.ascontiguousarray(pixels, dtype=np.uint8), info=info)


def _ensure_transfer_syntax(dataset: Any) -> None:
    """Give a dataset read without file meta (old ACR-NEMA style files, raw dumps) the transfer syntax
    it was read with: pydicom needs one to decode pixel data, and uncompressed is then the only option."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(dataset, "original_encoding", (True, True))
    if meta is None:
        meta = FileMetaDataset()
        dataset.file_meta = meta
    if implicit is None or implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little in (None, True) else ExplicitVRBigEndian


def _dicom_first_frame(dataset: Any, name: str) -> np.ndarray:
    """The first frame as a numpy array (``(h, w)`` or ``(h, w, 3)`` RGB)."""
    from pydicom.pixels import pixel_array

    try:
        array = pixel_array(dataset, index=0)
    except Exception as error:  # missing codec, damaged or truncated pixel data
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = getattr(syntax, "name", None) or str(syntax or "unknown")
        raise ImageError(f"{name!r}: the DICOM pixel data ({syntax_name}) cannot be decoded "
                         f"({_first_line(error)}). Expected uncompressed, JPEG or JPEG 2000 pixel data "
                         f"(JPEG 2000 needs pylibjpeg-openjpeg); export it uncompressed and try again.") from None
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] not in (3, 4):  # some plugins keep a frame axis
        array = array[0]
    if array.ndim not in (2, 3) or array.size == 0:
        raise ImageError(f"{name!r}: the DICOM pixel data has an unexpected shape {array.shape}; expected "
                         f"one (rows, columns) frame. Export the image again.")
    return array


def _dicom_grayscale(array: np.ndarray, dataset: Any, invert: bool) -> np.ndarray:
    """Modality LUT, then VOI (window or LUT), then 8 bits; MONOCHROME1 inverted so bones are bright."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        values = apply_modality_lut(array, dataset)
    except Exception:  # a malformed rescale must not lose the image: use stored values
        values = array
    values = np.asarray(values, dtype=np.float64)
    pixels = None
    window = _linear_window(dataset)
    if window is not None and "VOILUTSequence" not in dataset:
        # Our own linear window (PS3.3 C.11.2.1.2.1) straight to 0-255, so the radiologist's window
        # is kept as chosen instead of being stretched again by the image's range.
        center, width = window
        scaled = ((values - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
        pixels = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    elif "VOILUTSequence" in dataset or window is not None:
        try:
            pixels = _scale_to_uint8(np.asarray(apply_voi_lut(values, dataset, index=0), dtype=np.float64))
        except Exception:  # a malformed VOI LUT: fall back to the image's own range
            pixels = None
    if pixels is None:
        pixels = _scale_to_uint8(values)
    if invert:
        pixels = 255 - pixels
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def _first_number(value: Any) -> float:
    """The first value of a DICOM number that may be multi-valued (several windows)."""
    if not isinstance(value, (str, bytes, int, float)) and hasattr(value, "__getitem__"):
        value = value[0]
    return float(value)


def _linear_window(dataset: Any) -> tuple[float, float] | None:
    """The first (WindowCenter, WindowWidth) when the VOI function is LINEAR (or absent) and valid."""
    if "WindowCenter" not in dataset or "WindowWidth" not in dataset:
        return None
    function = str(dataset.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if function != "LINEAR":
        return None
    try:
        center, width = _first_number(dataset.WindowCenter), _first_number(dataset.WindowWidth)
    except (TypeError, ValueError, IndexError):
        return None
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 1.0:
        return None
    return center, width


__all__ = ["ACCEPTED", "COLOR_PHOTO_CHROMA", "DecodedImage", "ImageInfo", "MIN_IMAGE_SIDE", "decode_image",
           "load_image", "resize_square"]
