"""The PNG, JPEG and BMP size guards read width, height, bits and mode from the header of any layout, and
refuse an oversized image before OpenCV decodes anything; the size limits themselves at their edges.

Files are built here: PNG from chunks, JPEG by rewriting OpenCV's or Pillow's segments (progressive
SOF2, every SOFn, APPn/COM segments, fill bytes, standalone markers), BMP byte by byte in each DIB header
version (12-byte OS/2 core, 40-byte info, 108-byte V4, 124-byte V5), bottom-up and top-down, at 1 to 32
bits. Pillow, an independent reader, confirms what the hand-made files say; OpenCV decodes those it
supports to the exact pixels.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image
from test_imaging import encode, gradient, handmade_png, png_chunk
from test_tiff_headers import spy_on_decoder

from cxr.errors import ImageError
from cxr.imaging import decode_image
from cxr.raster import read_header

SOF_MARKERS = (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)  # ITU T.81 B.1.1.3


def header(kind: str, data: bytes) -> tuple:
    found = read_header(kind, data, "h")
    return found.format, found.width, found.height, found.bit_depth, found.mode


def info(data: bytes, **options) -> tuple:
    decoded = decode_image(data, **options)
    return decoded.info.width, decoded.info.height, decoded.info.bit_depth, decoded.info.mode


# --------------------------------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------------------------------


def png_start(width: int, height: int, bit_depth: int, color_type: int) -> bytes:
    """The signature and the IHDR chunk: the first 33 bytes of every PNG."""
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type,
                                                                     0, 0, 0))


@pytest.mark.parametrize("color_type, bit_depth, mode", [
    (0, 1, "gray"), (0, 8, "gray"), (0, 16, "gray16"), (2, 8, "rgb"), (2, 16, "rgb"), (3, 4, "palette"),
    (3, 8, "palette"), (4, 8, "gray"), (4, 16, "gray16"), (6, 8, "rgba"), (6, 16, "rgba")])
def test_png_modes_from_the_ihdr_alone(color_type, bit_depth, mode):
    start = png_start(300, 70000, bit_depth, color_type)
    assert len(start) == 33
    assert header("png", start) == ("png", 300, 70000, bit_depth, mode)


@pytest.mark.parametrize("color_type", [1, 5, 7])
def test_png_unknown_color_type_is_damaged(color_type):
    with pytest.raises(ImageError, match="'x.png': the PNG header is damaged or truncated"):
        decode_image(png_start(16, 16, 8, color_type) + png_chunk(b"IEND", b""), name="x.png")


def test_png_cut_inside_its_ihdr_or_starting_with_another_chunk_is_damaged():
    start = png_start(16, 16, 8, 0)
    with pytest.raises(ImageError, match="PNG header is damaged or truncated"):
        decode_image(start[:32])
    text_first = b"\x89PNG\r\n\x1a\n" + png_chunk(b"tEXt", b"Comment\0chest PA") + start[8:]
    with pytest.raises(ImageError, match="PNG header is damaged or truncated"):
        decode_image(text_first)


def test_png_width_with_the_top_bit_set_is_read_unsigned_and_refused(monkeypatch):
    decoder_calls = spy_on_decoder(monkeypatch)
    data = png_start(0xFFFFFFFF, 16, 8, 0) + png_chunk(b"IEND", b"")
    with pytest.raises(ImageError, match=r"'w.png' is 4294967295 x 16 pixels \(68,719,476,720\), more than"):
        decode_image(data, name="w.png")
    assert decoder_calls == []


def test_png_chunk_length_over_2_gib_is_truncated_not_read_backwards():
    # The length field is unsigned: 0xFFFFFFFF runs past the end of the file. Read as signed (-1) it
    # would step back 1 byte onto a fake IEND planted there.
    good = handmade_png(16, 16, 8, 0, [bytes(range(16))] * 16)
    hostile = good[:33] + struct.pack(">I", 0xFFFFFFFF) + b"tEXt" + b"\0\0\0" + b"\0\0\0\0IEND" + good[33:]
    with pytest.raises(ImageError, match="'l.png' is a truncated PNG"):
        decode_image(hostile, name="l.png")


def test_png_16_bit_gray_alpha_decodes_as_gray16():
    rows = [struct.pack(">" + "H" * 32, *[value * 1000 if index % 2 == 0 else 65535 for index, value in
                                          enumerate(range(32))]) for _ in range(16)]
    assert info(handmade_png(16, 16, 16, 4, rows)) == (16, 16, 16, "gray16")


# --------------------------------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------------------------------


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def frame(marker: int, precision: int, width: int, height: int, components: int) -> bytes:
    """A start-of-frame segment: precision, height, width, then 3 bytes per component."""
    parts = b"".join(bytes([index + 1, 0x11, 0]) for index in range(components))
    return segment(marker, struct.pack(">BHHB", precision, height, width, components) + parts)


def jpeg_with_frame(marker: int, precision: int, width: int, height: int, components: int) -> bytes:
    return b"\xff\xd8" + frame(marker, precision, width, height, components) + b"\xff\xd9"


def progressive_jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", progressive=True, quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("color", [False, True], ids=["gray", "rgb"])
def test_progressive_jpeg_reads_its_sof2_frame(color):
    pixels = gradient(24, 300)
    if color:
        pixels = np.dstack([pixels, pixels[:, ::-1], np.full_like(pixels, 99)])
    data = progressive_jpeg(pixels)
    assert b"\xff\xc2" in data and b"\xff\xc0" not in data
    assert header("jpeg", data) == ("jpeg", 300, 24, 8, "rgb" if color else "gray")
    assert info(data) == (300, 24, 8, "rgb" if color else "gray")


@pytest.mark.parametrize("marker", range(0xC0, 0xD0))
def test_every_start_of_frame_marker_and_only_those(marker):
    data = jpeg_with_frame(marker, 8, 300, 24, 3)
    if marker in SOF_MARKERS:
        assert header("jpeg", data) == ("jpeg", 300, 24, 8, "rgb")
    else:  # DHT, JPG and DAC segments have no frame size
        with pytest.raises(ImageError, match="the JPEG has no frame header"):
            read_header("jpeg", data, "h")


@pytest.mark.parametrize("marker, precision, components, mode", [
    (0xC0, 8, 1, "gray"), (0xC1, 12, 1, "gray16"), (0xC1, 12, 3, "rgb"), (0xC3, 9, 1, "gray16"),
    (0xC3, 16, 1, "gray16"), (0xC2, 8, 4, "rgb")])
def test_jpeg_precision_and_components_give_the_mode(marker, precision, components, mode):
    assert header("jpeg", jpeg_with_frame(marker, precision, 300, 24, components)) == (
        "jpeg", 300, 24, precision, mode)


def test_jpeg_segments_fill_bytes_and_standalone_markers_before_the_frame_are_walked():
    main = encode(gradient(24, 300), ".jpg")
    extras = (segment(0xE0, b"JFIF\0\1\2\0\0\1\0\1\0\0") + segment(0xE1, b"Exif\0\0" + b"\xff\xc0" * 20)
              + segment(0xFE, b"a comment \xff\xc0\x00\x11\x08") + b"\xff\xff\xff")  # fill bytes before the next marker
    data = main[:2] + extras + main[2:]
    assert header("jpeg", data) == ("jpeg", 300, 24, 8, "gray")
    assert info(data) == (300, 24, 8, "gray")
    # One fill byte (an odd count) before the frame; a TEM and the restart markers RST0 and RST7 (no length)
    for before in (b"\xff", b"\xff\x01", b"\xff\xd0", b"\xff\xd7", b"\xff\x01\xff\xd0\xff\xd7\xff"):
        data = b"\xff\xd8" + segment(0xE0, b"JFIF\0") + before + frame(0xC2, 8, 300, 24, 1) + b"\xff\xd9"
        assert header("jpeg", data) == ("jpeg", 300, 24, 8, "gray"), before


def test_jpeg_frame_after_the_end_or_the_scan_is_not_the_image():
    after_end = b"\xff\xd8\xff\xd9\x00\x02" + frame(0xC0, 8, 300, 24, 1)
    after_scan = b"\xff\xd8" + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + frame(0xC0, 8, 300, 24, 1)
    for data in (after_end, after_scan):
        with pytest.raises(ImageError, match="'j.jpg': the JPEG has no frame header"):
            decode_image(data + b"\xff\xd9", name="j.jpg")


def test_jpeg_with_bytes_that_are_not_a_marker_between_segments_is_damaged():
    data = b"\xff\xd8" + segment(0xE0, b"JFIF\0") + b"\x00\x00" + frame(0xC0, 8, 300, 24, 1) + b"\xff\xd9"
    where = data.index(b"\x00\x00\xff\xc0")
    with pytest.raises(ImageError, match=rf"'j.jpg' is a damaged JPEG: its segments are broken \(byte {where} is 0x00"):
        decode_image(data, name="j.jpg")


def test_truncated_jpeg_headers():
    data = b"\xff\xd8" + segment(0xE0, b"JFIF\0") + frame(0xC0, 8, 300, 24, 1) + b"\xff\xd9"
    sof = data.index(b"\xff\xc0")
    # Cut right after the frame marker's length, or inside the frame: the frame is there, its size is not.
    for cut in (sof + 4, sof + 8):
        with pytest.raises(ImageError, match="the JPEG header is damaged or truncated"):
            decode_image(data[:cut], name="j.jpg")
    # Cut before the frame marker is complete: no frame at all.
    for cut in (sof + 1, sof + 3):
        with pytest.raises(ImageError, match="the JPEG has no frame header"):
            decode_image(data[:cut], name="j.jpg")


def test_jpeg_height_zero_or_one():
    with pytest.raises(ImageError, match="does not state its height.*DNL"):
        decode_image(jpeg_with_frame(0xC0, 8, 300, 0, 1), name="dnl.jpg")
    assert header("jpeg", jpeg_with_frame(0xC0, 8, 300, 1, 1)) == ("jpeg", 300, 1, 8, "gray")
    with pytest.raises(ImageError, match="'one.jpg' is only 300 x 1 pixels"):
        decode_image(jpeg_with_frame(0xC0, 8, 300, 1, 1), name="one.jpg")


def opencv_jpeg_with(before_scan: bytes = b"", after_start: bytes = b"") -> bytes:
    """OpenCV's 300 x 24 gray JPEG with ``after_start`` right after SOI and ``before_scan`` right before SOS."""
    data = encode(gradient(24, 300), ".jpg")
    scan = data.index(b"\xff\xda")
    return data[:2] + after_start + data[2:scan] + before_scan + data[scan:]


def thumbnail_segment() -> bytes:
    """An APP1 holding a complete small JPEG (like an EXIF thumbnail): its own SOI, frame, scan and EOI."""
    thumbnail = encode(gradient(8, 8), ".jpg")
    return segment(0xE1, b"Exif\0\0" + thumbnail)


def test_jpeg_with_a_segment_longer_than_32_kib_before_the_frame():
    # ICC profiles (APP2) and EXIF blocks (APP1) reach 64 KiB; a length over 32767 is still unsigned.
    icc = segment(0xE2, b"ICC_PROFILE\0\1\1" + bytes(range(256)) * 160)  # 40,974 bytes
    assert struct.unpack(">H", icc[2:4])[0] > 32767
    data = opencv_jpeg_with(after_start=icc)
    assert header("jpeg", data) == ("jpeg", 300, 24, 8, "gray")
    np.testing.assert_array_equal(decode_image(data).pixels, decode_image(encode(gradient(24, 300), ".jpg")).pixels)
    with pytest.raises(ImageError, match="'c.jpg' is a truncated JPEG"):
        decode_image(data[:-40], name="c.jpg")


def test_jpeg_markers_between_the_frame_and_the_scan_are_walked_to_find_the_scan():
    # A thumbnail (with its own end marker) and parameterless TEM / RST0 / RST7 markers after the
    # frame: the scan is still found after them, so the file is whole, and a cut copy is not.
    plain = decode_image(encode(gradient(24, 300), ".jpg")).pixels
    for before_scan in (thumbnail_segment(), b"\xff\x01\xff\xd0\xff\xd7", b"\xff\xff\xff\xd7" + thumbnail_segment()):
        data = opencv_jpeg_with(before_scan=before_scan)
        np.testing.assert_array_equal(decode_image(data).pixels, plain)
        for cut in (len(data) - 40, data.rindex(b"\xff\xda") + 20):  # the main scan's is the last SOS
            with pytest.raises(ImageError, match="'c.jpg' is a truncated JPEG"):
                decode_image(data[:cut], name="c.jpg")


def test_jpeg_cut_before_its_scan_is_truncated_even_with_a_thumbnails_end_marker_inside():
    data = opencv_jpeg_with(after_start=thumbnail_segment())
    scan = data.rindex(b"\xff\xda")  # the main scan's (the thumbnail's comes first)
    assert data.rfind(b"\xff\xd9", 0, scan) > 0  # the thumbnail's end marker, before the cut
    for cut in (scan, scan - 31 - 4, scan - 3):  # at a segment boundary, at the last DHT, inside it
        with pytest.raises(ImageError, match="'c.jpg' is a truncated JPEG"):
            decode_image(data[:cut], name="c.jpg")


def test_jpeg_with_an_end_marker_or_junk_between_frame_and_scan_is_refused():
    # An end of image before any scan: the image ends there (its scan is lost), even if a scan and a
    # second end follow, so the file is refused as truncated, before the decoder sees it.
    for between in (b"\xff\xd9", b"\xff\xd9\x00\x02"):
        with pytest.raises(ImageError, match="'e.jpg' is a truncated JPEG"):
            decode_image(opencv_jpeg_with(before_scan=between), name="e.jpg")
    # Bytes that are not a marker where one must be (libjpeg itself would skip them with a warning).
    with pytest.raises(ImageError, match="'e.jpg' is a damaged JPEG: its segments are broken"):
        decode_image(opencv_jpeg_with(before_scan=b"\x00\x00"), name="e.jpg")


def test_a_cut_jpeg_and_junk_between_its_segments_are_told_apart_with_what_to_do():
    whole = encode(gradient(24, 300), ".jpg")
    with pytest.raises(ImageError) as cut:
        decode_image(whole[:-100], name="cut.jpg")
    assert str(cut.value).startswith("'cut.jpg' is a truncated JPEG: it ends before its end-of-image marker, so "
                                     "the picture cannot be read whole.")
    junk = opencv_jpeg_with(before_scan=b"\x00\x00")
    where = junk.index(b"\x00\x00\xff\xda")
    with pytest.raises(ImageError) as broken:
        decode_image(junk, name="junk.jpg")
    assert str(broken.value).startswith(f"'junk.jpg' is a damaged JPEG: its segments are broken (byte {where} is "
                                        "0x00 where a JPEG marker must start), so the picture cannot be read whole.")
    assert "truncated" not in str(broken.value) and "end-of-image" not in str(broken.value)
    for error in (cut.value, broken.value):  # what to do, in both
        assert "re-upload the original, or open it in an image viewer and save it again as JPEG or PNG" in str(error)


def test_junk_before_the_frame_header_is_named_like_junk_before_the_scan():
    """It read "the JPEG header is damaged or truncated", which sends the user looking for a cut file."""
    whole = encode(gradient(24, 300), ".jpg")
    frame = whole.index(b"\xff\xc0")
    junk = whole[:frame] + b"\x00\x00" + whole[frame:]
    with pytest.raises(ImageError) as broken:
        decode_image(junk, name="junk.jpg")
    assert str(broken.value).startswith(f"'junk.jpg' is a damaged JPEG: its segments are broken (byte {frame} is "
                                        "0x00 where a JPEG marker must start), so the picture cannot be read whole.")
    assert "re-upload the original, or open it in an image viewer and save it again as JPEG or PNG" in str(broken.value)


@pytest.mark.parametrize("marker", [0xC0, 0xC2])
def test_oversized_jpeg_is_refused_from_its_frame_before_decoding(marker, monkeypatch):
    decoder_calls = spy_on_decoder(monkeypatch)
    data = bytearray(progressive_jpeg(gradient(24, 300)) if marker == 0xC2 else encode(gradient(24, 300), ".jpg"))
    position = data.index(bytes([0xFF, marker]))
    data[position + 5:position + 9] = struct.pack(">HH", 50000, 60000)  # height, width
    with pytest.raises(ImageError, match=r"'b.jpg' is 60000 x 50000 pixels \(3,000,000,000\), more than"):
        decode_image(bytes(data), name="b.jpg")
    assert decoder_calls == []


# --------------------------------------------------------------------------------------------------
# BMP
# --------------------------------------------------------------------------------------------------


def bmp_file(pixels: np.ndarray, *, dib_size: int = 40, top_down: bool = False, bit_count: int | None = None,
             width: int | None = None, height: int | None = None) -> bytes:
    """An uncompressed BMP of ``pixels``: (h, w) uint8 as 8-bit gray palette, (h, w, 3) as 24-bit BGR,
    (h, w, 4) as 32-bit BGRA; or, with ``bit_count`` 1 or 4, (h, w) palette indexes (0..1, 0..15).
    ``width``/``height`` are written instead of the array's (a header that lies about its size)."""
    rows_of, columns_of = pixels.shape[:2]
    if bit_count is None:
        bit_count = 8 if pixels.ndim == 2 else 8 * pixels.shape[2]
    entry_size = 3 if dib_size == 12 else 4  # RGBTRIPLE in the OS/2 core format, RGBQUAD otherwise
    palette = b""
    if bit_count <= 8:
        levels = 1 << bit_count
        palette = b"".join(bytes([value * 255 // (levels - 1)] * 3 + [0] * (entry_size - 3)) for value in range(levels))
    rows = []
    for row in pixels:
        if bit_count < 8:
            bits = "".join(format(int(value), f"0{bit_count}b") for value in row)
            bits += "0" * (-len(bits) % 8)
            raw = int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""
        else:
            raw = row.tobytes()  # the BMP's BGR(A) order: the test's arrays are given in it
        rows.append(raw + b"\0" * (-len(raw) % 4))
    if not top_down:
        rows.reverse()
    data = b"".join(rows)
    width = columns_of if width is None else width
    height = (-rows_of if top_down else rows_of) if height is None else height
    if dib_size == 12:
        dib = struct.pack("<IHHHH", 12, width, height, 1, bit_count)
    else:
        dib = struct.pack("<IiiHHIIiiII", dib_size, width, height, 1, bit_count, 0, len(data), 2835, 2835,
                          len(palette) // 4, 0)
        dib = dib.ljust(dib_size, b"\0")
        if dib_size >= 108:
            dib = dib[:56] + b"BGRs" + dib[60:]  # LCS_sRGB colour space; masks and end points unused
    offset = 14 + len(dib) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + dib + palette + data


def pillow_mode_and_size(data: bytes) -> tuple:
    with Image.open(io.BytesIO(data)) as image:
        return image.mode, image.size


@pytest.mark.parametrize("dib_size", [12, 40, 108, 124])
@pytest.mark.parametrize("top_down", [False, True], ids=["bottom-up", "top-down"])
def test_gray_bmp_in_every_header_version_and_row_order(dib_size, top_down):
    if dib_size == 12 and top_down:
        pytest.skip("the OS/2 core header has unsigned sizes: no top-down rows")
    pixels = gradient(21, 300)  # 300 is not a multiple of 4: rows are padded
    data = bmp_file(pixels, dib_size=dib_size, top_down=top_down)
    assert pillow_mode_and_size(data) == ("L", (300, 21))
    assert header("bmp", data) == ("bmp", 300, 21, 8, "palette")
    decoded = decode_image(data, name="g.bmp")
    assert (decoded.info.width, decoded.info.height, decoded.info.mode) == (300, 21, "palette")
    np.testing.assert_array_equal(decoded.pixels, pixels)


@pytest.mark.parametrize("bit_count, mode", [(1, "palette"), (4, "palette"), (8, "palette"), (24, "rgb"),
                                             (32, "rgba")])
def test_bmp_bit_counts_give_the_mode(bit_count, mode):
    if bit_count < 8:
        pixels = (np.arange(21 * 300).reshape(21, 300) % (1 << bit_count)).astype(np.uint8)
    elif bit_count == 8:
        pixels = gradient(21, 300)
    else:
        pixels = np.dstack([gradient(21, 300)] * (bit_count // 8))
    data = bmp_file(pixels, bit_count=bit_count)
    assert pillow_mode_and_size(data)[1] == (300, 21)
    assert header("bmp", data) == ("bmp", 300, 21, bit_count, mode)
    assert info(data)[:3] == (300, 21, bit_count)


def test_bmp_16_bit_is_rgb():
    data = bmp_file(np.zeros((21, 300, 2), np.uint8), bit_count=16)
    assert header("bmp", data) == ("bmp", 300, 21, 16, "rgb")


def test_bmp_width_zero_is_too_small_and_a_negative_width_is_damaged():
    with pytest.raises(ImageError, match="'z.bmp' is only 0 x 21 pixels"):
        decode_image(bmp_file(gradient(21, 300), width=0), name="z.bmp")
    with pytest.raises(ImageError, match="'n.bmp': the BMP header is damaged or truncated"):
        decode_image(bmp_file(gradient(21, 300), width=-300), name="n.bmp")


def test_truncated_bmp_headers():
    info_header = bmp_file(gradient(21, 300))
    for cut in (26, 29):  # the info header's sizes need bytes 18..29
        with pytest.raises(ImageError, match="'t.bmp': the BMP header is damaged or truncated"):
            decode_image(info_header[:cut], name="t.bmp")
    # A core header is complete at 26 bytes: its size is read (and refused here as too large).
    core = bmp_file(gradient(21, 300), dib_size=12, width=65535, height=65000)
    with pytest.raises(ImageError, match=r"'t.bmp' is 65535 x 65000 pixels"):
        decode_image(core[:26], name="t.bmp")


@pytest.mark.parametrize("dib_size, width, height", [(12, 65535, 65000), (40, 40000, -30000),
                                                     (108, 30000, 40000), (124, 2**31 - 1, -1)])
def test_oversized_bmp_is_refused_from_its_header_before_decoding(dib_size, width, height, monkeypatch):
    decoder_calls = spy_on_decoder(monkeypatch)
    data = bmp_file(gradient(21, 300), dib_size=dib_size, width=width, height=height)
    area = width * abs(height)
    with pytest.raises(ImageError, match=rf"'b.bmp' is {width} x {abs(height)} pixels \({area:,}\), more than"):
        decode_image(data, name="b.bmp")
    assert decoder_calls == []


# --------------------------------------------------------------------------------------------------
# The limits: max_pixels and min_side at their edges
# --------------------------------------------------------------------------------------------------


def test_max_pixels_is_inclusive_and_either_short_side_is_refused():
    data = encode(gradient(21, 300), ".png")
    assert info(data, max_pixels=6300)[:2] == (300, 21)
    with pytest.raises(ImageError, match=r"300 x 21 pixels \(6,300\), more than the 6,299 accepted"):
        decode_image(data, max_pixels=6299)
    for height, width in ((4, 64), (64, 4), (7, 8), (8, 7)):
        with pytest.raises(ImageError, match=rf"is only {width} x {height} pixels; .* at least 8 x 8"):
            decode_image(encode(gradient(height, width), ".png"))
    assert info(encode(gradient(8, 8), ".png"))[:2] == (8, 8)
    assert info(encode(gradient(5, 64), ".png"), min_side=5)[:2] == (64, 5)
    with pytest.raises(ImageError, match="at least 6 x 6"):
        decode_image(encode(gradient(5, 64), ".png"), min_side=6)
