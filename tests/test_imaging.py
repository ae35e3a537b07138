"""Tests for cxr.imaging: every format and mode, bad input, decompression bombs, real DICOM files.

Images are made in the tests (OpenCV encoders, a small hand-written PNG writer, pydicom) and are a few
dozen pixels; the real files of ../shared/data are used when present and skipped otherwise.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_data import make_dicom

from cxr.errors import CxrError, ImageError
from cxr.imaging import decode_image, load_image, resize_square
from cxr.pixels import ACCEPTED, COLOR_PHOTO_CHROMA, MIN_IMAGE_SIDE, DecodedImage, ImageInfo

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DICOM_DIR = DATA / "dicom"
ORIGINAL_DICOM = DICOM_DIR / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


# --------------------------------------------------------------------------------------------------
# Helpers that make images
# --------------------------------------------------------------------------------------------------


def gradient(height: int = 48, width: int = 64) -> np.ndarray:
    """(height, width) uint8: a diagonal ramp, so any flip, crop or shift shows."""
    rows = np.arange(height, dtype=np.float32)[:, None]
    columns = np.arange(width, dtype=np.float32)[None, :]
    ramp = (rows / max(1, height - 1) * 0.4 + columns / max(1, width - 1) * 0.6) * 255
    return np.rint(ramp).astype(np.uint8)


def encode(array: np.ndarray, extension: str, params: list[int] | None = None) -> bytes:
    ok, buffer = cv2.imencode(extension, array, params or [])
    assert ok, f"OpenCV could not encode {extension}"
    return buffer.tobytes()


def png_chunk(chunk_type: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(chunk_type + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + chunk_type + payload + struct.pack(">I", crc)


def handmade_png(width: int, height: int, bit_depth: int, color_type: int, rows: list[bytes],
                 extra_chunks: bytes = b"") -> bytes:
    """A valid PNG from raw rows (filter type 0), for modes OpenCV cannot write (palette, gray+alpha)."""
    raw = b"".join(b"\x00" + row for row in rows)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + extra_chunks
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def check_valid(decoded: DecodedImage) -> None:
    """The invariants of every successful decode."""
    assert isinstance(decoded, DecodedImage)
    assert isinstance(decoded.info, ImageInfo)
    pixels = decoded.pixels
    assert pixels.dtype == np.uint8 and pixels.ndim == 2 and pixels.flags.c_contiguous
    assert pixels.shape == (decoded.info.height, decoded.info.width)


# --------------------------------------------------------------------------------------------------
# Formats and modes
# --------------------------------------------------------------------------------------------------


def test_import_is_cheap_and_lazy():
    code = "import sys, cxr.imaging; print('cv2' in sys.modules, 'pydicom' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.split() == ["False", "False"]


def test_png_gray_is_exact():
    image = gradient()
    decoded = decode_image(encode(image, ".png"), name="ramp.png")
    check_valid(decoded)
    np.testing.assert_array_equal(decoded.pixels, image)
    info = decoded.info
    assert (info.name, info.format, info.width, info.height, info.mode, info.bit_depth) == (
        "ramp.png", "png", 64, 48, "gray", 8)
    assert info.body_part is None and info.view_position is None and info.modality is None
    assert info.is_color_photo is False
    assert info.to_dict()["width"] == 64 and info.to_dict()["format"] == "png"


def test_jpeg_gray_is_close():
    image = gradient()
    decoded = decode_image(encode(image, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]))
    check_valid(decoded)
    assert decoded.info.format == "jpeg" and decoded.info.mode == "gray" and decoded.info.name == "image"
    assert np.abs(decoded.pixels.astype(int) - image).mean() < 2


@pytest.mark.parametrize("extension", [".png", ".jpg", ".bmp", ".tiff"])
def test_rgb_copy_of_gray_is_gray_and_not_a_photo(extension):
    image = gradient()
    decoded = decode_image(encode(np.dstack([image] * 3), extension))
    check_valid(decoded)
    assert decoded.info.mode == "rgb"
    assert decoded.info.is_color_photo is False
    assert np.abs(decoded.pixels.astype(int) - image).max() <= (6 if extension == ".jpg" else 1)


def test_color_photo_is_flagged_but_a_small_colored_mark_is_not():
    random = np.random.default_rng(0)
    photo = random.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)  # mean chroma about 128
    assert decode_image(encode(photo, ".png")).info.is_color_photo is True
    xray = np.dstack([gradient(40, 40)] * 3)
    xray[5:9, 5:9] = (0, 0, 255)  # a red annotation on 1 % of the image (BGR)
    decoded = decode_image(encode(xray, ".png"))
    assert decoded.info.is_color_photo is False
    # The rule's figure: pure red covers 255 of chroma, so 1 % of it stays far below the threshold.
    assert 255 * 16 / 1600 < COLOR_PHOTO_CHROMA


def test_bgr_order_is_respected():
    blue = np.zeros((16, 16, 3), np.uint8)
    blue[:, :, 0] = 255  # OpenCV order: pure blue
    pixels = decode_image(encode(blue, ".png")).pixels
    assert abs(int(pixels[0, 0]) - round(0.114 * 255)) <= 1  # luminance of blue, not of red (76)


def test_png_16_bit_low_range_is_stretched_not_black():
    # A 12-bit X-ray stored in a 16-bit PNG uses about 1/50 of the range: a plain >> 8 would be black.
    image = (1000 + gradient().astype(np.uint16) * 200 // 255).astype(np.uint16)
    decoded = decode_image(encode(image, ".png"))
    check_valid(decoded)
    assert decoded.info.mode == "gray16" and decoded.info.bit_depth == 16
    assert decoded.pixels.min() == 0 and decoded.pixels.max() == 255
    expected = (image.astype(np.float64) - image.min()) / (image.max() - image.min()) * 255
    assert np.abs(decoded.pixels - expected).max() <= 0.51


def test_16_bit_constant_keeps_its_level():
    white = np.full((16, 16), 65535, np.uint16)
    assert (decode_image(encode(white, ".png")).pixels == 255).all()
    black = np.zeros((16, 16), np.uint16)
    assert (decode_image(encode(black, ".png")).pixels == 0).all()


def test_tiff_16_bit_and_rgb_16_bit_png():
    image = (gradient().astype(np.uint16) * 10 + 500).astype(np.uint16)
    decoded = decode_image(encode(image, ".tiff"))
    check_valid(decoded)
    assert decoded.info.format == "tiff" and decoded.info.mode == "gray16" and decoded.info.bit_depth == 16
    assert decoded.pixels.min() == 0 and decoded.pixels.max() == 255
    color = encode(np.dstack([image] * 3), ".png")
    decoded = decode_image(color)
    assert decoded.info.mode == "rgb" and decoded.info.bit_depth == 16 and decoded.pixels.max() == 255


def test_rgba_is_composited_on_black():
    image = np.full((16, 16, 4), 255, np.uint8)  # white everywhere
    image[:, :8, 3] = 0  # left half transparent
    image[:, 8:12, 3] = 128  # half transparent
    decoded = decode_image(encode(image, ".png"))
    check_valid(decoded)
    assert decoded.info.mode == "rgba"
    assert (decoded.pixels[:, :8] == 0).all()
    assert (np.abs(decoded.pixels[:, 8:12].astype(int) - 128) <= 1).all()
    assert (decoded.pixels[:, 12:] == 255).all()


def test_gray_alpha_png():
    rows = [bytes([200, 255] * 8)] * 8 + [bytes([200, 0] * 8)] * 8  # gray 200, opaque then transparent
    decoded = decode_image(handmade_png(8, 16, 8, 4, rows))
    check_valid(decoded)
    assert decoded.info.mode == "gray"
    assert (decoded.pixels[:8] == 200).all() and (decoded.pixels[8:] == 0).all()


def test_palette_png():
    palette = png_chunk(b"PLTE", bytes([0, 0, 0, 128, 128, 128, 255, 255, 255]))
    rows = [bytes([index % 3 for index in range(row, row + 10)]) for row in range(10)]
    decoded = decode_image(handmade_png(10, 10, 8, 3, rows, palette))
    check_valid(decoded)
    assert decoded.info.mode == "palette" and decoded.info.is_color_photo is False
    expected = np.array([[(0, 128, 255)[index] for index in row] for row in rows], np.uint8)
    np.testing.assert_array_equal(decoded.pixels, expected)


def test_one_bit_png():
    rows = [bytes([0b10101010, 0b11110000])] * 16
    decoded = decode_image(handmade_png(16, 16, 1, 0, rows))
    check_valid(decoded)
    assert decoded.info.bit_depth == 1
    np.testing.assert_array_equal(decoded.pixels[0, :8], [255, 0] * 4)


@pytest.mark.parametrize("extension, kind", [(".bmp", "bmp"), (".tiff", "tiff")])
def test_bmp_and_tiff_gray(extension, kind):
    image = gradient()
    decoded = decode_image(encode(image, extension))
    check_valid(decoded)
    assert decoded.info.format == kind
    np.testing.assert_array_equal(decoded.pixels, image)


def test_every_kind_of_source_gives_the_same_image(tmp_path):
    data = encode(gradient(), ".png")
    path = tmp_path / "scan.png"
    path.write_bytes(data)
    from_path = decode_image(path)
    assert from_path.info.name == "scan.png"
    assert decode_image(str(path)).info.name == "scan.png"
    with open(path, "rb") as handle:
        from_handle = decode_image(handle)
    assert from_handle.info.name == "scan.png"
    from_stream = decode_image(io.BytesIO(data), name="upload.png")
    assert from_stream.info.name == "upload.png"
    for other in (decode_image(data), decode_image(bytearray(data)), decode_image(memoryview(data)),
                  from_handle, from_stream):
        np.testing.assert_array_equal(other.pixels, from_path.pixels)
    assert decode_image(path, name="given").info.name == "given"


def test_jpeg_with_bytes_after_its_end_is_accepted():
    data = encode(gradient(), ".jpg") + b"\x00" * 64 + b"trailing padding"
    check_valid(decode_image(data))


def test_jpeg_with_exif_thumbnail_style_app_segment_is_measured_from_the_main_frame():
    # An APP1 segment that holds a complete small JPEG (like an EXIF thumbnail) must not be mistaken
    # for the image: the size and the end marker are those of the main frame.
    thumbnail = encode(gradient(8, 8), ".jpg")
    main = encode(gradient(48, 64), ".jpg")
    app1 = b"\xff\xe1" + struct.pack(">H", len(thumbnail) + 2 + 6) + b"Exif\x00\x00" + thumbnail
    decoded = decode_image(main[:2] + app1 + main[2:])
    assert (decoded.info.width, decoded.info.height) == (64, 48)
    truncated = (main[:2] + app1 + main[2:])[:-40]
    with pytest.raises(ImageError, match="truncated JPEG"):
        decode_image(truncated)


# --------------------------------------------------------------------------------------------------
# resize_square and load_image
# --------------------------------------------------------------------------------------------------


def test_resize_square_shrinks_with_area_and_grows_with_linear():
    image = gradient(48, 64)
    small = resize_square(image, 16)
    np.testing.assert_array_equal(small, cv2.resize(image, (16, 16), interpolation=cv2.INTER_AREA))
    large = resize_square(image, 100)
    np.testing.assert_array_equal(large, cv2.resize(image, (100, 100), interpolation=cv2.INTER_LINEAR))
    mixed = resize_square(image, 56)  # taller, narrower: a side shrinks, so area
    np.testing.assert_array_equal(mixed, cv2.resize(image, (56, 56), interpolation=cv2.INTER_AREA))
    for result, size in ((small, 16), (large, 100), (mixed, 56)):
        assert result.shape == (size, size) and result.dtype == np.uint8 and result.flags.c_contiguous


def test_resize_square_same_size_is_a_copy_and_views_are_accepted():
    image = gradient(32, 32)
    same = resize_square(image, 32)
    np.testing.assert_array_equal(same, image)
    assert not np.shares_memory(same, image)
    view = gradient(40, 30).T  # not C-contiguous
    result = resize_square(view, 20)
    assert result.shape == (20, 20) and result.flags.c_contiguous


@pytest.mark.parametrize("pixels, size", [
    (np.zeros((8, 8, 3), np.uint8), 4),
    (np.zeros((8, 8), np.float32), 4),
    (np.zeros((0, 8), np.uint8), 4),
    (np.zeros((8, 8), np.uint8), 0),
    (np.zeros((8, 8), np.uint8), 4.5),
    (np.zeros((8, 8), np.uint8), True),
])
def test_resize_square_refuses_bad_input(pixels, size):
    with pytest.raises(ImageError):
        resize_square(pixels, size)


def test_load_image_resizes_and_keeps_original_size_in_info():
    pixels, info = load_image(encode(gradient(48, 64), ".png"), 32, name="x.png")
    assert pixels.shape == (32, 32) and pixels.dtype == np.uint8 and pixels.flags.c_contiguous
    assert (info.width, info.height, info.name) == (64, 48, "x.png")


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def test_errors_are_value_errors_of_the_project():
    assert issubclass(ImageError, CxrError) and issubclass(ImageError, ValueError)


def test_empty_bytes_and_empty_file(tmp_path):
    with pytest.raises(ImageError, match=r"'nothing.png' is empty \(0 bytes\)"):
        decode_image(b"", name="nothing.png")
    empty = tmp_path / "blank.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="'blank.jpg' is empty") as raised:
        decode_image(empty)
    assert ACCEPTED in str(raised.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="'absent.png': no such file"):
        decode_image(tmp_path / "absent.png")
    with pytest.raises(ImageError, match="is a folder"):
        decode_image(tmp_path)


def test_text_renamed_png_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("Patient notes: cough for three days.\n")
    with pytest.raises(ImageError) as raised:
        decode_image(path)
    message = str(raised.value)
    assert "'notes.png' is not an image" in message and "looks like text" in message
    assert "JPEG, PNG, BMP, TIFF or DICOM" in message


@pytest.mark.parametrize("data, hint", [
    (b"GIF89a" + bytes(100), "GIF"),
    (b"%PDF-1.7\n" + bytes(100), "PDF"),
    (bytes(range(256)) * 2, "starts with bytes 00 01 02"),
])
def test_other_formats_are_named_in_the_message(data, hint):
    with pytest.raises(ImageError, match=hint):
        decode_image(data, name="upload")


def test_unsupported_source_type_and_text_mode_file(tmp_path):
    with pytest.raises(ImageError, match="expects a path, bytes or a binary file"):
        decode_image(12345)  # type: ignore[arg-type]
    path = tmp_path / "a.png"
    path.write_bytes(encode(gradient(), ".png"))
    with open(path, encoding="latin-1") as handle, pytest.raises(ImageError, match="binary mode"):
        decode_image(handle)


@pytest.mark.parametrize("keep", ["half", "all but the end marker", "all but 100 bytes"])
def test_truncated_jpeg_is_refused(keep):
    data = encode(gradient(64, 64), ".jpg")
    cut = {"half": len(data) // 2, "all but the end marker": len(data) - 2,
           "all but 100 bytes": len(data) - 100}[keep]
    with pytest.raises(ImageError, match="'cut.jpg' is a truncated JPEG") as raised:
        decode_image(data[:cut], name="cut.jpg")
    assert "re-upload" in str(raised.value)


def test_jpeg_cut_inside_its_header_is_refused():
    data = encode(gradient(64, 64), ".jpg")
    with pytest.raises(ImageError, match="'h.jpg'"):
        decode_image(data[:30], name="h.jpg")


@pytest.mark.parametrize("keep", ["half", "no IEND", "signature and IHDR only"])
def test_truncated_png_is_refused(keep):
    data = encode(gradient(64, 64), ".png")
    cut = {"half": len(data) // 2, "no IEND": len(data) - 12, "signature and IHDR only": 33}[keep]
    with pytest.raises(ImageError, match="'cut.png' is a truncated PNG"):
        decode_image(data[:cut], name="cut.png")


def test_png_with_damaged_image_data_is_refused():
    data = bytearray(encode(gradient(64, 64), ".png"))
    start = data.index(b"IDAT") + 4
    data[start:start + 40] = bytes(40)  # zeroes over the compressed data, chunk structure intact
    with pytest.raises(ImageError, match="'bad.png'"):
        decode_image(bytes(data), name="bad.png")


def test_tiny_image_is_refused_and_min_side_is_adjustable():
    tiny = encode(np.zeros((4, 4), np.uint8), ".png")
    with pytest.raises(ImageError, match=r"only 4 x 4 pixels.*at least 8 x 8"):
        decode_image(tiny, name="icon.png")
    assert decode_image(tiny, min_side=1).pixels.shape == (4, 4)
    assert MIN_IMAGE_SIDE == 8
    check_valid(decode_image(encode(np.zeros((8, 8), np.uint8), ".png")))


def test_max_pixels_is_honoured():
    data = encode(gradient(48, 64), ".png")
    with pytest.raises(ImageError, match=r"64 x 48 pixels \(3,072\), more than the 3,000 accepted"):
        decode_image(data, name="big.png", max_pixels=3000)
    check_valid(decode_image(data, max_pixels=3072))


# --------------------------------------------------------------------------------------------------
# Decompression bombs: refused from the header, fast, without allocating
# --------------------------------------------------------------------------------------------------


# Refusal times and memory are printed by benchmarks/bench_guards.py (no wall-clock limit in tests); the
# builders below are shared with it.
def png_bomb_bytes() -> bytes:
    """A valid 30000 x 30000 1-bit gray PNG of zeros: ~110 KB that would decode to 900 M pixels."""
    compressor = zlib.compressobj(9)
    block = (b"\x00" + bytes(30000 // 8)) * 1000  # 1000 rows: filter byte + 3750 bytes of pixels
    idat = b"".join(compressor.compress(block) for _ in range(30)) + compressor.flush()
    header = struct.pack(">IIBBBBB", 30000, 30000, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def png_bomb() -> bytes:
    return png_bomb_bytes()


def refuse_without_decoding(data: bytes, name: str) -> int:
    """Decode ``data`` expecting the bomb refusal; return the peak traced bytes (a decode would allocate
    the pixels: hundreds of MB)."""
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="decompression bombs"):
            decode_image(data, name=name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak


def test_png_bomb_is_refused_from_its_header(png_bomb):
    assert len(png_bomb) < 200_000
    peak = refuse_without_decoding(png_bomb, "bomb.png")
    assert peak < 5 * len(png_bomb) + 1_000_000  # a copy or two of the file, never 900 M pixels


def test_png_bomb_message(png_bomb):
    with pytest.raises(ImageError) as raised:
        decode_image(png_bomb, name="bomb.png")
    message = str(raised.value)
    assert "'bomb.png' is 30000 x 30000 pixels (900,000,000)" in message
    assert "80,000,000" in message and "downscale" in message


def _patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    position = data.index(b"\xff\xc0")  # OpenCV writes baseline SOF0
    return data[:position + 5] + struct.pack(">HH", height, width) + data[position + 9:]


def jpeg_bomb_bytes() -> bytes:
    return _patch_jpeg_size(encode(gradient(), ".jpg"), 60000, 60000)


def bmp_bomb_bytes() -> bytes:
    bmp = bytearray(encode(gradient(), ".bmp"))
    bmp[18:26] = struct.pack("<ii", 40000, -40000)  # top-down: negative height
    return bytes(bmp)


def tiff_bomb_bytes() -> bytes:
    tiff = bytearray(encode(gradient(), ".tiff"))
    (offset,) = struct.unpack("<I", tiff[4:8])
    (count,) = struct.unpack("<H", tiff[offset:offset + 2])
    for index in range(count):
        entry = offset + 2 + 12 * index
        tag, value_type = struct.unpack("<HH", tiff[entry:entry + 4])
        if tag in (256, 257):
            tiff[entry + 2:entry + 4] = struct.pack("<H", 4)  # LONG
            tiff[entry + 8:entry + 12] = struct.pack("<I", 40000)
    return bytes(tiff)


def dicom_bomb_bytes() -> bytes:
    return make_dicom(np.zeros((16, 16), np.uint8), Rows=30000, Columns=30000)


@pytest.mark.parametrize("build, name", [(jpeg_bomb_bytes, "bomb.jpg"), (bmp_bomb_bytes, "bomb.bmp"),
                                         (tiff_bomb_bytes, "bomb.tiff"), (dicom_bomb_bytes, "bomb.dcm")])
def test_jpeg_bmp_tiff_and_dicom_bombs_are_refused_from_their_headers(build, name):
    data = build()
    # 40000+ pixels a side as uint8 would be over 1.6 GB; the refusal allocates about the file.
    assert refuse_without_decoding(data, name) < 5 * len(data) + 1_000_000


# --------------------------------------------------------------------------------------------------
# DICOM made in the test
# --------------------------------------------------------------------------------------------------


def test_dicom_monochrome2_with_window_and_metadata():
    stored = (gradient().astype(np.uint16) * 4).astype(np.uint16)  # 10-bit values 0..1020
    data = make_dicom(stored, bits_stored=10, WindowCenter=510, WindowWidth=1021)
    decoded = decode_image(data, name="chest.dcm")
    check_valid(decoded)
    info = decoded.info
    assert (info.format, info.mode, info.bit_depth, info.body_part, info.view_position, info.modality) == (
        "dicom", "monochrome2", 10, "CHEST", "PA", "CR")
    # PS3.3 C.11.2.1.2.1 with c=510, w=1021 maps 0 -> 0 and 1020 -> 255 (linear in between).
    expected = np.clip(((stored - 509.5) / 1020 + 0.5) * 255, 0, 255)
    assert np.abs(decoded.pixels - expected).max() <= 0.51


def test_dicom_narrow_window_clips():
    stored = (gradient().astype(np.uint16) * 4).astype(np.uint16)
    decoded = decode_image(make_dicom(stored, bits_stored=10, WindowCenter=500, WindowWidth=11))
    assert (decoded.pixels[stored < 490] == 0).all() and (decoded.pixels[stored > 510] == 255).all()
    # Inside the window, PS3.3 C.11.2.1.2.1: ((x - (c - 0.5)) / (w - 1) + 0.5) clipped to [0, 1].
    inside = (stored >= 495) & (stored <= 505)
    expected = np.rint(np.clip(((stored[inside] - 499.5) / 10 + 0.5), 0, 1) * 255)
    assert inside.any()
    np.testing.assert_array_equal(decoded.pixels[inside], expected)


def test_dicom_without_window_uses_its_range_and_rescale():
    stored = (gradient().astype(np.uint16) + 100).astype(np.uint16)
    decoded = decode_image(make_dicom(stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1024))
    assert decoded.pixels.min() == 0 and decoded.pixels.max() == 255
    np.testing.assert_array_equal(np.argsort(decoded.pixels.ravel(), kind="stable"),
                                  np.argsort(stored.ravel(), kind="stable"))


def test_dicom_monochrome1_is_inverted():
    stored = gradient()
    normal = decode_image(make_dicom(stored, photometric="MONOCHROME2")).pixels
    inverted = decode_image(make_dicom(stored, photometric="MONOCHROME1"))
    assert inverted.info.mode == "monochrome1"
    np.testing.assert_array_equal(inverted.pixels, 255 - normal)


def test_dicom_without_preamble_and_by_name(tmp_path):
    stored = gradient()
    data = make_dicom(stored, preamble=False)
    assert data[128:132] != b"DICM"
    np.testing.assert_array_equal(decode_image(data).pixels, stored)
    path = tmp_path / "scan.dcm"
    path.write_bytes(data)
    assert decode_image(path).info.format == "dicom"


@pytest.mark.parametrize("implicit_vr", [True, False])
def test_dicom_without_file_meta_or_preamble(implicit_vr):
    # Old ACR-NEMA style streams: no preamble, no "DICM", no file meta, so no transfer syntax stated.
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(make_dicom(gradient())))
    del dataset.file_meta
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, implicit_vr=implicit_vr, little_endian=True)
    data = buffer.getvalue()[132:]
    assert data[:2] == b"\x08\x00"  # starts straight with a group 0008 element
    decoded = decode_image(data)
    assert decoded.info.format == "dicom"
    np.testing.assert_array_equal(decoded.pixels, gradient())


def test_dicom_signed_pixels():
    stored = (gradient().astype(np.int16) * 10 - 1000).astype(np.int16)
    decoded = decode_image(make_dicom(stored.view(np.uint16), PixelRepresentation=1))
    assert decoded.pixels.min() == 0 and decoded.pixels.max() == 255
    np.testing.assert_array_equal(np.argsort(decoded.pixels.ravel(), kind="stable"),
                                  np.argsort(stored.ravel(), kind="stable"))


def test_dicom_rgb_is_converted_and_flagged():
    import pydicom

    image = gradient()
    color = np.dstack([image, image // 2, 255 - image])  # RGB order, strongly colored
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(image)))
    dataset.SamplesPerPixel = 3
    dataset.PhotometricInterpretation = "RGB"
    dataset.PlanarConfiguration = 0
    dataset.PixelData = color.tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    decoded = decode_image(buffer.getvalue())
    assert decoded.info.mode == "rgb" and decoded.info.is_color_photo is True
    np.testing.assert_array_equal(decoded.pixels, cv2.cvtColor(color, cv2.COLOR_RGB2GRAY))


def test_dicom_multi_frame_takes_the_first_frame():
    frames = np.stack([gradient(), 255 - gradient(), np.zeros_like(gradient())])
    decoded = decode_image(make_dicom(frames))
    assert decoded.info.num_frames == 3
    np.testing.assert_array_equal(decoded.pixels, gradient())


def test_dicom_without_pixel_data_is_refused():
    data = make_dicom(gradient(), with_pixels=False)
    with pytest.raises(ImageError, match="'report.dcm' is a DICOM file without pixel data"):
        decode_image(data, name="report.dcm")


def test_dicom_named_file_that_is_not_dicom(tmp_path):
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"this is not a dicom file at all, just words\n" * 4)
    with pytest.raises(ImageError, match="'fake.dcm'"):
        decode_image(path)


def test_dicom_with_truncated_pixel_data_is_refused():
    data = make_dicom(gradient())
    with pytest.raises(ImageError, match="'short.dcm'"):
        decode_image(data[:-500], name="short.dcm")


# --------------------------------------------------------------------------------------------------
# Real files (../shared/data), skipped when absent
# --------------------------------------------------------------------------------------------------


def real(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


def test_real_224_px_jpeg():
    folder = real(DATA / "chest_xray" / "train" / "NORMAL")
    path = sorted(folder.glob("*.jpeg"))[0]
    decoded = decode_image(path)
    check_valid(decoded)
    assert decoded.pixels.shape == (224, 224)
    assert decoded.info.is_color_photo is False  # stored as RGB, but gray
    assert decoded.pixels.std() > 20  # a picture, not a flat field


def test_real_rgb_original_is_gray_and_not_a_photo():
    path = real(DATA / "originals" / "PNEUMONIA" / "person1052_virus_1751.jpeg")
    decoded = decode_image(path)
    assert decoded.info.mode == "rgb" and decoded.info.is_color_photo is False
    assert (decoded.info.width, decoded.info.height) == (836, 521)


def _spine_and_lung(pixels: np.ndarray) -> tuple[float, float]:
    """Mean of a central vertical strip (spine, mediastinum) and of the right lung field (image left)."""
    height, width = pixels.shape
    rows = slice(height // 3, 2 * height // 3)
    spine = pixels[rows, width // 2 - width // 20: width // 2 + width // 20].mean()
    lung = pixels[rows, width // 5: 2 * width // 5].mean()
    return float(spine), float(lung)


def test_real_monochrome1_chest_has_bright_bones():
    path = real(DICOM_DIR / "CR-MONO1-10-chest.dcm")
    decoded = decode_image(path)
    check_valid(decoded)
    assert decoded.info.mode == "monochrome1" and decoded.info.bit_depth == 10
    assert decoded.pixels.shape == (440, 440)
    spine, lung = _spine_and_lung(decoded.pixels)
    assert spine > lung + 20
    # The same file without its preamble and "DICM" marker decodes identically.
    stripped = decode_image(path.read_bytes()[132:], name="stripped")
    np.testing.assert_array_equal(stripped.pixels, decoded.pixels)


def test_real_jpeg_baseline_dicom_and_its_fake_monochrome1_twin():
    original = decode_image(real(ORIGINAL_DICOM))
    fake = decode_image(real(DICOM_DIR / "Fake_MONOHR1.dcm"))
    assert original.info.mode == "monochrome2" and fake.info.mode == "monochrome1"
    assert original.pixels.shape == fake.pixels.shape == (1024, 1024)
    assert (original.info.body_part, original.info.view_position, original.info.modality) == ("CHEST", "PA", "CR")
    spine, lung = _spine_and_lung(original.pixels)
    assert spine > lung + 20
    # Only the header differs, so the fake decodes to the inverse of the original.
    assert np.abs(fake.pixels.astype(int) - (255 - original.pixels.astype(int))).mean() < 2


def test_real_jpeg_2000_dicom():
    decoded = decode_image(real(DICOM_DIR / "RG1_J2KI.dcm"))
    check_valid(decoded)
    assert decoded.pixels.shape == (1955, 1841)
    assert decoded.info.bit_depth == 15 and decoded.info.mode == "monochrome1"
    spine, lung = _spine_and_lung(decoded.pixels)
    assert spine > lung + 10
    assert decoded.pixels.std() > 20


def test_real_tibia_is_not_a_chest():
    decoded = decode_image(real(DICOM_DIR / "RG3_J2KI_tibia.dcm"))
    check_valid(decoded)
    assert decoded.info.body_part is not None and "CHEST" not in decoded.info.body_part.upper()
    assert decoded.info.body_part == "EXTREMITY"


def test_real_dicom_bomb_guard_uses_the_header():
    with pytest.raises(ImageError, match="1841 x 1955 pixels"):
        decode_image(real(DICOM_DIR / "RG1_J2KI.dcm"), max_pixels=1_000_000)
