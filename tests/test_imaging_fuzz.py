"""Property tests for cxr.imaging.decode_image: whatever the bytes, the result is a valid image or an
ImageError, never another exception, a crash or a wrong-shaped array."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hypothesis_numpy

from cxr.errors import ImageError
from cxr.imaging import decode_image
from cxr.pixels import DecodedImage

# pydicom warns (and carries on) about garbage such as an unknown character set; that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Magic prefixes that route bytes to each decoder, so random tails exercise every header parser.
PREFIXES = [
    b"",
    b"\xff\xd8\xff",  # JPEG
    b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x20\x00\x20\x01",  # JPEG with a 32 x 32 frame header
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x20\x00\x00\x00\x20\x08\x00\x00\x00\x00",
    b"BM",  # BMP
    b"II*\x00",  # TIFF little endian
    b"MM\x00*",  # TIFF big endian
    bytes(128) + b"DICM",  # DICOM with preamble
    b"\x02\x00\x00\x00UL\x04\x00",  # DICOM file meta without preamble
    b"\x08\x00\x05\x00CS",  # DICOM dataset without meta
]


def decode_or_refuse(data: bytes, name: str = "fuzz") -> DecodedImage | None:
    """Decode; an ImageError is an accepted outcome (returns None), anything else fails the test."""
    try:
        decoded = decode_image(data, name=name)
    except ImageError as error:
        assert name in str(error)  # every refusal names the file
        return None
    pixels = decoded.pixels
    assert isinstance(pixels, np.ndarray)
    assert pixels.dtype == np.uint8 and pixels.ndim == 2 and pixels.flags.c_contiguous
    assert pixels.shape == (decoded.info.height, decoded.info.width)
    assert min(pixels.shape) >= 8
    return decoded


@FUZZ
@given(prefix=st.sampled_from(PREFIXES), tail=st.binary(max_size=600))
def test_random_bytes_decode_or_raise_image_error(prefix, tail):
    decode_or_refuse(prefix + tail)


@FUZZ
@given(tail=st.binary(max_size=300), extension=st.sampled_from([".dcm", ".png", ".jpg", ""]))
def test_random_bytes_from_a_file_like_with_a_name(tail, extension):
    stream = io.BytesIO(tail)
    stream.name = f"upload{extension}"
    try:
        decoded = decode_image(stream)
    except ImageError as error:
        assert f"upload{extension}" in str(error)
        return
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.ndim == 2


small_images = hypothesis_numpy.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16]),
    shape=st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([1, 3, 4])),
)


@FUZZ
@given(image=small_images, extension=st.sampled_from([".png", ".jpg", ".bmp", ".tiff"]))
def test_random_small_arrays_encoded_by_opencv(image, extension):
    if image.shape[2] == 1:
        image = image[:, :, 0]
    if extension in (".jpg", ".bmp") and image.dtype != np.uint8:
        image = (image >> 8).astype(np.uint8)  # these encoders write 8 bits only
    if extension == ".jpg" and image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    ok, buffer = cv2.imencode(extension, image)
    if not ok:
        return
    decoded = decode_or_refuse(buffer.tobytes())
    height, width = image.shape[:2]
    if min(height, width) >= 8:
        assert decoded is not None, "a valid image at least 8 px on a side must decode"
        assert (decoded.info.height, decoded.info.width) == (height, width)
        if extension in (".png", ".tiff") and image.ndim == 2 and image.dtype == np.uint8:
            np.testing.assert_array_equal(decoded.pixels, image)  # lossless gray stays exact
    else:
        assert decoded is None


@st.composite
def damaged_files(draw):
    """A valid small PNG or JPEG with bytes cut, overwritten or inserted."""
    size = draw(st.integers(8, 24))
    random = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = random.integers(0, 256, size=(size, size), dtype=np.uint8)
    extension = draw(st.sampled_from([".png", ".jpg"]))
    data = bytearray(cv2.imencode(extension, image)[1].tobytes())
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["cut", "overwrite", "insert"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "cut":
            del data[position:position + draw(st.integers(1, 64))]
        elif action == "overwrite":
            data[position:position + 1] = bytes([draw(st.integers(0, 255))])
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@FUZZ
@given(data=damaged_files())
def test_damaged_png_and_jpeg_decode_or_raise_image_error(data):
    decode_or_refuse(data)
