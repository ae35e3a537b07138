"""JPEG, PNG, BMP and TIFF: the size read from the header before any pixel is decoded, the refusal of
truncated files, and decoding with OpenCV (imported when first used).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from cxr.errors import ImageError
from cxr.pixels import ACCEPTED, JPEG_SOF_MARKERS, DecodedImage, ImageInfo, check_size, first_line, to_gray_uint8


@dataclass
class _Header:
    """What the header says before any pixel is decoded."""

    format: str
    width: int
    height: int
    bit_depth: int = 8
    mode: str | None = None  # set when the header knows better than the decoded array (palette)


# --------------------------------------------------------------------------------------------------
# Headers: the size before decoding
# --------------------------------------------------------------------------------------------------


def read_header(kind: str, data: bytes, name: str) -> _Header:
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
        if data[position] != 0xFF:  # junk before the frame header: say so, as for junk before the scan
            raise ImageError(_jpeg_refusal(name, _broken_segments(position, data[position])))
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
        if marker in JPEG_SOF_MARKERS:
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
    values: dict[int, int] = {}  # the first value of each SHORT or LONG field held in the entry itself
    elsewhere: dict[int, int] = {}  # where the values are, for fields too long for the entry's 4 bytes
    for index in range(count):
        entry = data[offset + 2 + 12 * index: offset + 14 + 12 * index]
        tag, value_type, value_count = struct.unpack(order + "HHI", entry[:8])
        if value_type not in (3, 4):  # only SHORT and LONG fields matter here
            continue
        size = 2 if value_type == 3 else 4
        if size * value_count > 4:  # the entry holds the offset of the values (a LONG in either case)
            (elsewhere[tag],) = struct.unpack(order + "I", entry[8:12])
        else:  # the values sit at the start of the field, in the file's byte order
            (values[tag],) = struct.unpack(order + ("H" if size == 2 else "I"), entry[8:8 + size])
    if 256 not in values or 257 not in values:
        raise ValueError("no ImageWidth or ImageLength")
    samples = values.get(277, 1)
    bit_depth = values.get(258, 1)  # TIFF 6.0's default: one bit
    if 258 in elsewhere:  # one depth per sample (RGB, RGBA): all our cases share one, read the first
        try:
            (bit_depth,) = struct.unpack(order + "H", data[elsewhere[258]:elsewhere[258] + 2])
        except struct.error:  # a file cut before the list (a partial download): assume the usual 8
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


def check_jpeg_complete(data: bytes, name: str) -> None:
    """Refuse a JPEG whose segments do not lead to its scan data followed by an end-of-image marker: a
    file cut short, an end of image before any scan, or bytes that are not a marker between two segments.

    Inside entropy-coded data a 0xFF byte is always followed by 0x00 or a restart marker, so an
    FF D9 after the first scan is the real end of the image (trailing bytes after it are tolerated).
    """
    start_of_scan, problem = _jpeg_first_scan(data)
    if start_of_scan >= 0 and data.rfind(b"\xff\xd9") > start_of_scan:
        return
    if problem is None:  # the scan was found (or the segments ran past the end): the file was cut short
        problem = "a truncated JPEG: it ends before its end-of-image marker"
    raise ImageError(_jpeg_refusal(name, problem))


def _jpeg_refusal(name: str, problem: str) -> str:
    """The message for a JPEG that cannot be read whole: what was found (``problem``), what is expected, what to do."""
    return (f"{name!r} is {problem}, so the picture cannot be read whole. Expected a complete {ACCEPTED} file; "
            f"re-upload the original, or open it in an image viewer and save it again as JPEG or PNG.")


def _broken_segments(position: int, found: int) -> str:
    return (f"a damaged JPEG: its segments are broken (byte {position} is 0x{found:02X} where a JPEG marker "
            f"must start)")


def _jpeg_first_scan(data: bytes) -> tuple[int, str | None]:
    """``(offset of the first SOS marker, None)``, walking segments like ``_jpeg_header``; ``(-1, what was
    found instead)`` ("a damaged JPEG: …", "a truncated JPEG: …") when a non-marker byte or an end of image
    comes first; ``(-1, None)`` when the data ends before any scan."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return -1, _broken_segments(position, data[position])
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        if marker == 0xDA:
            return position, None
        if marker == 0xD9:
            return -1, f"a truncated JPEG: its end-of-image marker (byte {position}) comes before any picture data"
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        position += 2 + length
    return -1, None


def check_png_complete(data: bytes, name: str) -> None:
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


def decode_with_opencv(data: bytes, header: _Header, name: str, max_pixels: int, min_side: int) -> DecodedImage:
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
        raise ImageError(f"{name!r}: the {header.format.upper()} data cannot be decoded ({first_line(error)}). "
                         f"Expected a valid {ACCEPTED} file; re-export or re-upload it.") from None
    if array is None or array.size == 0:
        raise ImageError(f"{name!r}: the {header.format.upper()} data cannot be decoded (damaged or "
                         f"truncated, or a variant OpenCV does not support). Expected a valid {ACCEPTED} "
                         f"file; re-export it as an 8-bit PNG or JPEG.")
    height, width = array.shape[:2]
    check_size(width, height, name, max_pixels, min_side, header.format)
    channels = 1 if array.ndim == 2 else array.shape[2]
    if header.mode is not None:
        mode = header.mode
    else:  # pragma: no cover - every header reader sets a mode
        mode = {1: "gray", 3: "rgb", 4: "rgba"}.get(channels, "rgb")
    if mode == "gray" and array.dtype != np.uint8:
        mode = "gray16"
    pixels, is_color_photo = to_gray_uint8(array)
    info = ImageInfo(name=name, format=header.format, width=int(width), height=int(height), mode=mode,
                     bit_depth=int(header.bit_depth), is_color_photo=is_color_photo)
    return DecodedImage(pixels=pixels, info=info)


__all__ = ["read_header", "check_jpeg_complete", "check_png_complete", "decode_with_opencv"]
