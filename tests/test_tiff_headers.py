"""The TIFF size guard reads width, height, bits and mode from the first image file directory (IFD) of any
layout: little- or big-endian, the IFD before or after the pixels, several IFDs, several strips, sizes as
SHORT or LONG, values stored out of line. Every file is built here byte by byte (``tiff_file``), checked
against Pillow as an independent reader, and, where OpenCV can decode it, decoded to the exact pixels.
An oversized TIFF is refused from its header, before OpenCV is asked to decode anything.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from cxr.errors import ImageError
from cxr.imaging import decode_image
from cxr.raster import read_header

ASCII, SHORT, LONG, RATIONAL = 2, 3, 4, 5
_FORMATS = {SHORT: "H", LONG: "I"}


def _pack(order: str, value_type: int, values) -> bytes:
    if value_type == ASCII:
        return values
    if value_type == RATIONAL:  # (numerator, denominator) pairs
        return struct.pack(order + "II" * len(values), *[part for pair in values for part in pair])
    return struct.pack(order + _FORMATS[value_type] * len(values), *values)


def tiff_file(pages: list[dict], *, order: str = "<", ifd_last: bool = False) -> bytes:
    """An uncompressed strip TIFF of one or more pages, laid out as asked.

    Each page: ``pixels`` ``(h, w)`` or ``(h, w, samples)`` uint8/uint16; ``photometric`` (default 1,
    black is zero); ``rows_per_strip`` (default all rows); ``size_type`` SHORT or LONG for the width
    and height (default SHORT); ``extra`` {tag: (type, values)} added or replaced; ``omit`` tags left
    out; ``width``/``height`` written instead of the array's (a header that lies about its size).
    ``ifd_last``: the directories after all the pixel data (as many writers do) instead of at byte 8.
    """
    directories = []  # per page: sorted [(tag, type, values)] with StripOffsets filled in later
    strips_of_pages = []
    for page in pages:
        pixels = page["pixels"]
        height, width = pixels.shape[:2]
        samples = 1 if pixels.ndim == 2 else pixels.shape[2]
        raw = pixels.astype(pixels.dtype.newbyteorder(order)).tobytes()
        rows = page.get("rows_per_strip", height)
        row_bytes = len(raw) // height
        strips = [raw[start * row_bytes:(start + rows) * row_bytes] for start in range(0, height, rows)]
        size_type = page.get("size_type", SHORT)
        tags = {256: (size_type, [page.get("width", width)]), 257: (size_type, [page.get("height", height)]),
                258: (SHORT, [pixels.dtype.itemsize * 8] * samples), 259: (SHORT, [1]),
                262: (SHORT, [page.get("photometric", 1)]), 273: (LONG, [0] * len(strips)),
                277: (SHORT, [samples]), 278: (LONG, [rows]), 279: (LONG, [len(strip) for strip in strips]),
                284: (SHORT, [1])}
        tags.update(page.get("extra", {}))
        for tag in page.get("omit", ()):
            tags.pop(tag)
        directories.append(dict(sorted(tags.items())))
        strips_of_pages.append(strips)

    def directory_size(tags: dict) -> int:
        return 2 + 12 * len(tags) + 4

    def out_of_line(tags: dict) -> list[int]:
        return [tag for tag, (value_type, values) in tags.items() if len(_pack(order, value_type, values)) > 4]

    def even(size: int) -> int:
        return size + size % 2

    data_size = sum(even(len(strip)) for strips in strips_of_pages for strip in strips)
    data_size += sum(even(len(_pack(order, *tags[tag]))) for tags in directories for tag in out_of_line(tags))
    directories_size = sum(directory_size(tags) for tags in directories)
    data_start, directory_start = (8, 8 + data_size) if ifd_last else (8 + directories_size, 8)

    output = bytearray(8 + data_size + directories_size)
    output[:8] = (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, directory_start)
    cursor = data_start
    for tags, strips in zip(directories, strips_of_pages, strict=True):
        offsets = []
        for strip in strips:
            output[cursor:cursor + len(strip)] = strip
            offsets.append(cursor)
            cursor += even(len(strip))
        if 273 in tags:
            tags[273] = (LONG, offsets)
        value_offsets = {}
        for tag in out_of_line(tags):
            packed = _pack(order, *tags[tag])
            output[cursor:cursor + len(packed)] = packed
            value_offsets[tag] = cursor
            cursor += even(len(packed))
        tags["value_offsets"] = value_offsets
    cursor = directory_start
    for index, tags in enumerate(directories):
        value_offsets = tags.pop("value_offsets")
        following = cursor + directory_size(tags) if index + 1 < len(directories) else 0
        output[cursor:cursor + 2] = struct.pack(order + "H", len(tags))
        for number, (tag, (value_type, values)) in enumerate(tags.items()):
            packed = _pack(order, value_type, values)
            field = struct.pack(order + "I", value_offsets[tag]) if tag in value_offsets else packed.ljust(4, b"\0")
            entry = cursor + 2 + 12 * number
            output[entry:entry + 12] = struct.pack(order + "HHI", tag, value_type, len(values)) + field
        output[cursor + 2 + 12 * len(tags):cursor + directory_size(tags)] = struct.pack(order + "I", following)
        cursor += directory_size(tags)
    return bytes(output)


def ramp(height: int, width: int, dtype=np.uint8, scale: int = 1) -> np.ndarray:
    """(height, width) ramp with distinct rows and columns, so a swap, flip or shift shows."""
    rows = np.arange(height)[:, None] * 7
    columns = np.arange(width)[None, :]
    return ((rows + columns) % 251 * scale).astype(dtype)


def header(data: bytes) -> tuple:
    found = read_header("tiff", data, "t.tiff")
    return found.format, found.width, found.height, found.bit_depth, found.mode


def pillow_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def spy_on_decoder(monkeypatch) -> list:
    """Record every call of OpenCV's decoder from now on (a refusal from the header must make none)."""
    import cv2

    calls = []
    real = cv2.imdecode

    def spy(*arguments):
        calls.append(arguments)
        return real(*arguments)

    monkeypatch.setattr(cv2, "imdecode", spy)
    return calls


# --------------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"], ids=["II", "MM"])
@pytest.mark.parametrize("ifd_last", [False, True], ids=["ifd-first", "ifd-last"])
@pytest.mark.parametrize("size_type", [SHORT, LONG], ids=["short", "long"])
def test_gray_tiff_in_every_layout_reads_its_size_and_decodes(order, ifd_last, size_type):
    # 300 x 20: a width over 255 so a byte-order or half-word mistake changes it; six strips of 4 rows
    # (the last short) and a resolution (RATIONAL, out of line) after the fields that matter.
    pixels = ramp(22, 300)
    data = tiff_file([{"pixels": pixels, "rows_per_strip": 4, "size_type": size_type,
                       "extra": {282: (RATIONAL, [(72, 1)]), 283: (RATIONAL, [(72, 1)])}}],
                     order=order, ifd_last=ifd_last)
    assert data[:2] == (b"II" if order == "<" else b"MM")
    (directory,) = struct.unpack(order + "I", data[4:8])
    assert directory > 8 + pixels.nbytes if ifd_last else directory == 8
    assert pillow_size(data) == (300, 22)
    assert header(data) == ("tiff", 300, 22, 8, "gray")
    decoded = decode_image(data, name="layout.tiff")
    assert (decoded.info.width, decoded.info.height, decoded.info.mode, decoded.info.bit_depth) == (300, 22, "gray", 8)
    np.testing.assert_array_equal(decoded.pixels, pixels)


@pytest.mark.parametrize("order", ["<", ">"], ids=["II", "MM"])
def test_the_first_of_several_directories_gives_the_size(order):
    # Page 1 is 300 x 22 gray, page 2 a 40 x 30 RGB 16-bit "thumbnail": only the first counts.
    first, second = ramp(22, 300), np.dstack([ramp(30, 40, np.uint16, 200)] * 3)
    for ifd_last in (False, True):
        data = tiff_file([{"pixels": first, "rows_per_strip": 8}, {"pixels": second, "photometric": 2}],
                         order=order, ifd_last=ifd_last)
        with Image.open(io.BytesIO(data)) as image:
            assert image.n_frames == 2 and image.size == (300, 22)
        assert header(data) == ("tiff", 300, 22, 8, "gray")
        np.testing.assert_array_equal(decode_image(data).pixels, first)


def test_big_endian_16_bit_gray_written_by_pillow():
    pixels = ramp(24, 300, np.uint16, 250)  # up to 62750
    buffer = io.BytesIO()
    Image.frombytes("I;16B", (300, 24), pixels.astype(">u2").tobytes()).save(buffer, format="TIFF")
    data = buffer.getvalue()
    assert data[:4] == b"MM\x00\x2a"
    assert header(data) == ("tiff", 300, 24, 16, "gray16")
    decoded = decode_image(data)
    assert (decoded.info.mode, decoded.info.bit_depth, decoded.pixels.shape) == ("gray16", 16, (24, 300))
    # 16 bits are scaled by the image's own range to 0..255
    expected = np.rint((pixels.astype(np.float64) - pixels.min()) * 255.0 / (pixels.max() - pixels.min()))
    assert np.abs(decoded.pixels.astype(int) - expected).max() <= 1


# --------------------------------------------------------------------------------------------------
# Samples, bits and photometric interpretation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"], ids=["II", "MM"])
@pytest.mark.parametrize("ifd_last", [False, True], ids=["ifd-first", "ifd-last"])
@pytest.mark.parametrize("dtype, bits", [(np.uint8, 8), (np.uint16, 16)])
def test_rgb_reads_its_bits_from_the_out_of_line_list(order, ifd_last, dtype, bits):
    # Three BitsPerSample values (6 bytes) do not fit the field, which holds their 4-byte offset instead
    # (past 65535 when the directory follows 72,000+ bytes of pixels); an ImageDescription (ASCII, a
    # type the reader skips) sits before SamplesPerPixel.
    pixels = np.dstack([ramp(80, 300, dtype), ramp(80, 300, dtype)[:, ::-1], np.full((80, 300), 9, dtype)])
    data = tiff_file([{"pixels": pixels, "photometric": 2, "extra": {270: (ASCII, b"chest PA\0")}}],
                     order=order, ifd_last=ifd_last)
    assert header(data) == ("tiff", 300, 80, bits, "rgb")
    decoded = decode_image(data)
    assert (decoded.info.mode, decoded.info.bit_depth) == ("rgb", bits)


@pytest.mark.parametrize("order", ["<", ">"], ids=["II", "MM"])
def test_rgba_gray_alpha_and_palette(order):
    rgba = np.dstack([ramp(20, 300)] * 3 + [np.full((20, 300), 255, np.uint8)])
    data = tiff_file([{"pixels": rgba, "photometric": 2, "extra": {338: (SHORT, [2])}}], order=order)
    assert header(data) == ("tiff", 300, 20, 8, "rgba")
    gray_alpha = np.dstack([ramp(20, 300, np.uint16, 200), np.full((20, 300), 65535, np.uint16)])
    # two 16-bit samples: both BitsPerSample values fit in the field, the first is read
    data = tiff_file([{"pixels": gray_alpha, "extra": {338: (SHORT, [2])}}], order=order)
    assert header(data) == ("tiff", 300, 20, 16, "gray16")
    data = tiff_file([{"pixels": gray_alpha.astype(np.uint8), "extra": {338: (SHORT, [2])}}], order=order)
    assert header(data) == ("tiff", 300, 20, 8, "gray")
    colormap = [value * 257 for value in range(256)] * 3  # a gray palette, 16-bit entries
    data = tiff_file([{"pixels": ramp(20, 300), "photometric": 3, "extra": {320: (SHORT, colormap)}}],
                     order=order)
    assert header(data) == ("tiff", 300, 20, 8, "palette")
    assert decode_image(data).info.mode == "palette"


def test_bilevel_without_bits_per_sample_defaults_to_one_bit():
    # TIFF 6.0: BitsPerSample defaults to 1. 16 x 12 bilevel, rows packed 8 pixels a byte.
    packed = np.tile(np.array([[0b10101010, 0b11110000]], np.uint8), (12, 1))
    data = tiff_file([{"pixels": packed, "width": 16, "omit": (258,)}])
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (16, 12) and image.mode == "1"
    assert header(data) == ("tiff", 16, 12, 1, "gray")


def test_gray_without_samples_per_pixel_is_one_sample():
    data = tiff_file([{"pixels": ramp(20, 300, np.uint16, 100), "omit": (277,)}], order=">")
    assert header(data) == ("tiff", 300, 20, 16, "gray16")
    data = tiff_file([{"pixels": ramp(20, 300), "omit": (277, 262)}], order=">")
    assert header(data) == ("tiff", 300, 20, 8, "gray")


# --------------------------------------------------------------------------------------------------
# Damaged, truncated and oversized
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [256, 257])
def test_a_directory_without_width_or_length_is_damaged(missing):
    data = tiff_file([{"pixels": ramp(20, 300), "omit": (missing,)}], order=">")
    with pytest.raises(ImageError, match=r"'t.tiff': the TIFF header is damaged or truncated"):
        decode_image(data, name="t.tiff")


@pytest.mark.parametrize("order", ["<", ">"], ids=["II", "MM"])
def test_truncated_tiffs(order):
    pixels = np.dstack([ramp(20, 300)] * 3)
    data = tiff_file([{"pixels": pixels, "photometric": 2}], order=order, ifd_last=True)
    (directory,) = struct.unpack(order + "I", data[4:8])
    for cut in (6, directory + 1, directory + 2 + 12 * 3):  # in the header, the count, the third entry
        with pytest.raises(ImageError, match="TIFF header is damaged or truncated"):
            decode_image(data[:cut], name="cut.tiff")
    # The whole directory is there but the BitsPerSample list it points to is cut off (a file cut
    # before its directory's own values, as a header-only download gives): 8 bits are assumed.
    data = tiff_file([{"pixels": pixels, "photometric": 2}], order=order)
    (directory,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[directory:directory + 2])
    end_of_directory = directory + 2 + 12 * count + 4
    assert header(data[:end_of_directory]) == ("tiff", 300, 20, 8, "rgb")


@pytest.mark.parametrize("order", ["<", ">"], ids=["II", "MM"])
@pytest.mark.parametrize("size_type, width, height", [(SHORT, 60000, 50000), (LONG, 100000, 70000)])
def test_oversized_tiff_is_refused_from_its_header_before_decoding(order, size_type, width, height, monkeypatch):
    decoder_calls = spy_on_decoder(monkeypatch)
    data = tiff_file([{"pixels": ramp(20, 300), "size_type": size_type, "width": width, "height": height}],
                     order=order, ifd_last=True)
    with pytest.raises(ImageError, match=rf"'bomb.tiff' is {width} x {height} pixels \({width * height:,}\), "
                                         r"more than the 80,000,000 accepted"):
        decode_image(data, name="bomb.tiff")
    assert decoder_calls == []


@pytest.mark.parametrize("bits, mode", [(1, "gray"), (4, "gray"), (8, "gray"), (9, "gray16"), (12, "gray16"),
                                        (16, "gray16")])
def test_gray_bit_depths_from_the_header(bits, mode):
    data = tiff_file([{"pixels": ramp(20, 300), "extra": {258: (SHORT, [bits])}}], order=">")
    assert header(data) == ("tiff", 300, 20, bits, mode)


def test_offsets_and_counts_are_unsigned_never_read_from_the_end_of_the_file():
    # Read as signed, an offset of 2^31 or more is negative and Python would slice from the file's end.
    pixels = ramp(20, 300)
    tail = struct.pack(">H", 2) + struct.pack(">HHIHH", 256, SHORT, 1, 300, 0) + struct.pack(">HHIHH", 257, SHORT,
                                                                                             1, 20, 0)
    tail += bytes(4)  # no next directory
    data = tiff_file([{"pixels": pixels}], order=">") + tail  # a well-formed directory as the last 30 bytes
    pointing_past_the_end = data[:4] + struct.pack(">I", 2**32 - len(tail)) + data[8:]
    with pytest.raises(ImageError, match="TIFF header is damaged or truncated"):
        decode_image(pointing_past_the_end)
    # RGB whose BitsPerSample list is said to be 2^32 - 4 bytes in (the last 4 bytes hold 16, 16): not read.
    rgb = tiff_file([{"pixels": np.dstack([pixels] * 3), "photometric": 2}], order=">") + struct.pack(">HH", 16, 16)
    (directory,) = struct.unpack(">I", rgb[4:8])
    entry = _entry_position(rgb, ">", directory, 258)
    rgb = rgb[:entry + 8] + struct.pack(">I", 2**32 - 4) + rgb[entry + 12:]
    assert header(rgb) == ("tiff", 300, 20, 8, "rgb")
    # A width field whose count (2^32 - 1 values) cannot fit the entry: its values are elsewhere, not inline.
    gray = tiff_file([{"pixels": pixels}], order=">")
    entry = _entry_position(gray, ">", 8, 256)
    gray = gray[:entry + 4] + struct.pack(">I", 2**32 - 1) + gray[entry + 8:]
    with pytest.raises(ImageError, match="TIFF header is damaged or truncated"):
        decode_image(gray)


@pytest.mark.parametrize("order", ["<", ">"], ids=["II", "MM"])
def test_a_long_width_of_2_gib_or_more_is_refused_as_too_large(order, monkeypatch):
    decoder_calls = spy_on_decoder(monkeypatch)
    data = tiff_file([{"pixels": ramp(20, 300), "size_type": LONG, "width": 2**31 + 5}], order=order)
    with pytest.raises(ImageError, match=r"is 2147483653 x 20 pixels \(42,949,673,060\), more than"):
        decode_image(data)
    assert decoder_calls == []


def _entry_position(data: bytes, order: str, directory: int, tag: int) -> int:
    (count,) = struct.unpack(order + "H", data[directory:directory + 2])
    for index in range(count):
        position = directory + 2 + 12 * index
        if struct.unpack(order + "H", data[position:position + 2])[0] == tag:
            return position
    raise LookupError(tag)
