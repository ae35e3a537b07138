"""DICOM VOI windows, written here with pydicom (no shared data needed).

MONOCHROME1 stores bone dark (0 = white); the decoder applies the modality LUT, then the file's
window, then inverts, so the result looks like a MONOCHROME2 radiograph. Expected pixels are worked
out from PS3.3 C.11.2.1.2.1 by hand: y = ((x - (c - 0.5)) / (w - 1) + 0.5) clipped to [0, 1], x 255,
rounded; then 255 - y for MONOCHROME1. The VOI LUT Functions SIGMOID and LINEAR_EXACT follow their
formulas in PS3.3 C.11.2.1.3, written out below independently of the decoder.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers_data import make_dicom
from pydicom.multival import MultiValue
from pydicom.valuerep import DSfloat
from test_imaging import encode, gradient

from cxr.imaging import decode_image


def windowed(values: np.ndarray, center: float, width: float) -> np.ndarray:
    scaled = np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0) * 255.0
    return np.rint(scaled).astype(np.uint8)


def ramp_10_bit() -> np.ndarray:
    return (gradient().astype(np.uint16) * 4).astype(np.uint16)  # 0..1020


def test_monochrome1_with_a_window_is_windowed_then_inverted():
    stored = ramp_10_bit()
    decoded = decode_image(make_dicom(stored, photometric="MONOCHROME1", bits_stored=10,
                                      WindowCenter=400, WindowWidth=301), name="mono1.dcm")
    assert decoded.info.mode == "monochrome1" and decoded.info.bit_depth == 10
    expected = 255 - windowed(stored.astype(np.float64), 400, 301)
    np.testing.assert_array_equal(decoded.pixels, expected)
    # Spot values by hand: x = 0 is below the window (stored black) -> 255 after inversion; x = 1020 is
    # above it -> 0; x = 400 maps to rint((0.5 / 300 + 0.5) * 255) = 128 -> 127.
    assert decoded.pixels[stored == 0].tolist() == [255] * int((stored == 0).sum())
    assert set(decoded.pixels[stored == 1020].tolist()) == {0}
    assert set(decoded.pixels[stored == 400].tolist()) == {127}
    # The same file as MONOCHROME2 gives the un-inverted window: the two are complements.
    plain = decode_image(make_dicom(stored, photometric="MONOCHROME2", bits_stored=10,
                                    WindowCenter=400, WindowWidth=301)).pixels
    np.testing.assert_array_equal(decoded.pixels, 255 - plain)


def test_monochrome1_window_is_applied_after_the_rescale_and_the_first_window_wins():
    stored = ramp_10_bit()
    # Hounsfield-like rescale: value = 2 x stored - 1000 (-1000..1040); two windows, the first is used.
    data = make_dicom(stored, photometric="MONOCHROME1", bits_stored=10, RescaleSlope=2, RescaleIntercept=-1000,
                      WindowCenter=MultiValue(DSfloat, [0, 500]), WindowWidth=MultiValue(DSfloat, [801, 2000]))
    decoded = decode_image(data)
    expected = 255 - windowed(2.0 * stored - 1000.0, 0, 801)
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert decoded.pixels.min() == 0 and decoded.pixels.max() == 255  # the narrow first window clips both ends


def test_a_window_wider_than_the_data_is_kept_not_stretched():
    # c = 510, w = 4001 over data 0..1020: PS3.3 gives 95..160 of 255; the radiologist's window is kept,
    # not stretched again to 0..255 by the image's range.
    stored = ramp_10_bit()
    decoded = decode_image(make_dicom(stored, bits_stored=10, WindowCenter=510, WindowWidth=4001)).pixels
    np.testing.assert_array_equal(decoded, windowed(stored.astype(np.float64), 510, 4001))
    assert (decoded.min(), decoded.max()) == (95, 160)


def test_a_voi_lut_sequence_is_applied_then_inverted_for_monochrome1():
    from pydicom.dataset import Dataset

    stored = ramp_10_bit()
    table = [int(60000 * (index / 1023) ** 2) for index in range(1024)]  # non-linear: x^2
    item = Dataset()
    item.LUTDescriptor = [1024, 0, 16]
    item.LUTData = np.asarray(table, np.uint16).tobytes()
    data = make_dicom(stored, photometric="MONOCHROME1", bits_stored=10, VOILUTSequence=[item])
    looked_up = np.asarray(table, np.float64)[stored]
    stretched = np.rint((looked_up - looked_up.min()) * (255.0 / (looked_up.max() - looked_up.min())))
    expected = 255 - stretched
    pixels = decode_image(data).pixels.astype(int)
    assert np.abs(pixels - expected).max() <= 1  # float32 rounding at .5
    # A straight (linear) scaling of the stored values would be far off in the middle of the range.
    linear = 255 - np.rint(stored / 1020.0 * 255)
    assert np.abs(pixels - linear).max() > 40


# PS3.3 C.11.2.1.3: the non-linear VOI LUT Functions, with the output range 0..255 (ymin 0, ymax 255).
def sigmoid_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """SIGMOID: y = (ymax - ymin) / (1 + exp(-4 (x - c) / w)) + ymin, rounded."""
    return np.rint(255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))).astype(np.uint8)


def linear_exact_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """LINEAR_EXACT: ymin at or below c - w/2, ymax above c + w/2, else ((x - c) / w + 0.5) (ymax - ymin) + ymin."""
    inside = np.rint(((values - center) / width + 0.5) * 255.0)
    below, above = values <= center - width / 2, values > center + width / 2
    return np.where(below, 0, np.where(above, 255, inside)).astype(np.uint8)


def test_a_sigmoid_window_follows_the_standard_curve():
    stored = ramp_10_bit()
    data = make_dicom(stored, bits_stored=10, WindowCenter=500, WindowWidth=400, VOILUTFunction="SIGMOID")
    decoded = decode_image(data)
    assert decoded.info.mode == "monochrome2"
    np.testing.assert_array_equal(decoded.pixels, sigmoid_window(stored.astype(np.float64), 500, 400))
    # By hand: x = c gives 255 / 2 = 127.5 -> 128; x = 0 gives 255 / (1 + e^5) = 1.71 -> 2;
    # x = 1020 gives 255 / (1 + e^-5.2) = 253.6 -> 254; x = 600 (c + w/4) gives 255 / (1 + e^-1) = 186.4 -> 186.
    for value, expected in ((500, 128), (0, 2), (1020, 254), (600, 186)):
        assert set(decoded.pixels[stored == value].tolist()) == {expected}, value
    # A linear window of the same center and width would clip both ends to 0 and 255.
    linear = decode_image(make_dicom(stored, bits_stored=10, WindowCenter=500, WindowWidth=400)).pixels
    assert (linear.min(), linear.max()) == (0, 255) and (decoded.pixels.min(), decoded.pixels.max()) == (2, 254)


def test_a_sigmoid_window_after_the_rescale_then_inverted_for_monochrome1():
    stored = ramp_10_bit()
    # value = 2 x stored - 1000 (-1000..1040); the first of two windows (c = 100, w = 3000) is used, wider
    # than the data: the curve's middle only, kept as chosen (not stretched again to 0..255).
    data = make_dicom(stored, photometric="MONOCHROME1", bits_stored=10, RescaleSlope=2, RescaleIntercept=-1000,
                      WindowCenter=MultiValue(DSfloat, [100, 0]), WindowWidth=MultiValue(DSfloat, [3000, 10]),
                      VOILUTFunction="SIGMOID")
    decoded = decode_image(data)
    expected = 255 - sigmoid_window(2.0 * stored - 1000.0, 100, 3000)
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert (decoded.pixels.min(), decoded.pixels.max()) == (57, 207)  # 255 - 198, 255 - 48


def test_a_linear_exact_window_follows_the_standard_formula():
    stored = ramp_10_bit()
    data = make_dicom(stored, bits_stored=10, WindowCenter=501, WindowWidth=10, VOILUTFunction="LINEAR_EXACT")
    decoded = decode_image(data).pixels
    np.testing.assert_array_equal(decoded, linear_exact_window(stored.astype(np.float64), 501, 10))
    # By hand, LINEAR_EXACT (LINEAR of the same c, w in brackets): x = 496 = c - w/2 -> 0 (0);
    # x = 500 -> 0.4 x 255 = 102 (113); x = 504 -> 0.8 x 255 = 204 (227); x = 508 > c + w/2 -> 255 (255).
    for value, expected in ((492, 0), (496, 0), (500, 102), (504, 204), (508, 255)):
        assert set(decoded[stored == value].tolist()) == {expected}, value


def own_range(stored: np.ndarray) -> np.ndarray:
    """The image scaled by its own range (0..1020 -> 0..255): what a file without a usable window shows."""
    return np.rint(stored / 1020.0 * 255).astype(np.uint8)


@pytest.mark.parametrize("function, width", [("SIGMOID", 0), ("LINEAR_EXACT", 0), ("LINEAR", 1), ("GAMMA", 400)])
def test_a_window_the_standard_does_not_allow_falls_back_to_the_images_range(function, width):
    stored = ramp_10_bit()
    data = make_dicom(stored, bits_stored=10, WindowCenter=500, WindowWidth=width, VOILUTFunction=function)
    np.testing.assert_array_equal(decode_image(data).pixels, own_range(stored))


def test_the_narrowest_windows_the_standard_allows_are_applied():
    # LINEAR needs a width over 1 (it divides by w - 1); LINEAR_EXACT and SIGMOID any positive width.
    stored = ramp_10_bit().astype(np.float64)
    linear = decode_image(make_dicom(ramp_10_bit(), bits_stored=10, WindowCenter=500, WindowWidth=2)).pixels
    np.testing.assert_array_equal(linear, windowed(stored, 500, 2))
    for function, expected in (("LINEAR_EXACT", linear_exact_window(stored, 500, 1)),
                               ("SIGMOID", sigmoid_window(stored, 500, 0.5))):
        width = 1 if function == "LINEAR_EXACT" else 0.5
        data = make_dicom(ramp_10_bit(), bits_stored=10, WindowCenter=500, WindowWidth=width, VOILUTFunction=function)
        np.testing.assert_array_equal(decode_image(data).pixels, expected)


def test_an_empty_voi_lut_function_is_the_default_linear():
    stored = ramp_10_bit()
    data = make_dicom(stored, bits_stored=10, WindowCenter=500, WindowWidth=400, VOILUTFunction="")
    np.testing.assert_array_equal(decode_image(data).pixels, windowed(stored.astype(np.float64), 500, 400))


@pytest.mark.parametrize("window", [{"WindowCenter": 500}, {"WindowWidth": 400},
                                    {"WindowCenter": "nan", "WindowWidth": 400},
                                    {"WindowCenter": 500, "WindowWidth": "inf"}], ids=["no width", "no center",
                                                                                      "nan center", "inf width"])
def test_an_incomplete_or_non_finite_window_falls_back_to_the_images_range(window):
    stored = ramp_10_bit()
    np.testing.assert_array_equal(decode_image(make_dicom(stored, bits_stored=10, **window)).pixels, own_range(stored))


def voi_lut_item(table: list[int]):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [1024, 0, 16]
    item.LUTData = np.asarray(table, np.uint16).tobytes()
    return item


def test_a_voi_lut_sequence_wins_over_a_window_and_a_broken_one_falls_back_to_the_range():
    stored = ramp_10_bit()
    inverse = [1023 - index for index in range(1024)]  # a LUT that reverses the gray levels
    data = make_dicom(stored, bits_stored=10, VOILUTSequence=[voi_lut_item(inverse)], WindowCenter=500,
                      WindowWidth=400)
    np.testing.assert_array_equal(decode_image(data).pixels, 255 - own_range(stored))
    broken = make_dicom(stored, bits_stored=10, VOILUTSequence=[voi_lut_item([0, 1, 2])])  # 1024 said, 3 given
    np.testing.assert_array_equal(decode_image(broken).pixels, own_range(stored))


def test_a_broken_modality_lut_falls_back_to_the_stored_values():
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [1024, 0, 16]  # and no LUTData
    item.ModalityLUTType = "US"
    stored = ramp_10_bit()
    np.testing.assert_array_equal(decode_image(make_dicom(stored, bits_stored=10, ModalityLUTSequence=[item])).pixels,
                                  own_range(stored))


# ------------------------------------------------------------------------------------ a blank frame


@pytest.mark.parametrize(("value", "dtype", "bits_stored", "representation", "expected"), [
    (40000, np.uint16, 16, 0, 156),  # rint(255 x 40000 / 65535)
    (2048, np.uint16, 12, 0, 128),  # rint(255 x 2048 / 4095): its level among 12 bits, not 16
    (200, np.uint8, 8, 0, 200),
    (0, np.int16, 16, 1, 128),  # signed: 0 is the middle of -32768..32767
    (-32768, np.int16, 16, 1, 0),
])
def test_a_blank_dicom_keeps_its_grey_level(value, dtype, bits_stored, representation, expected):
    blank = np.full((32, 32), value, dtype)
    decoded = decode_image(make_dicom(blank, bits_stored=bits_stored, PixelRepresentation=representation),
                           name="blank.dcm")
    assert decoded.pixels.shape == (32, 32)
    assert set(decoded.pixels.ravel().tolist()) == {expected}


def test_a_blank_dicom_decodes_like_the_same_blank_16_bit_png_and_monochrome1_is_inverted():
    blank = np.full((32, 32), 40000, np.uint16)
    png = decode_image(encode(blank, ".png")).pixels
    dicom = decode_image(make_dicom(blank)).pixels
    np.testing.assert_array_equal(dicom, png)
    assert png[0, 0] == 156
    # A rescale does not move the level (it is linear), and MONOCHROME1 shows its complement.
    rescaled = decode_image(make_dicom(blank, RescaleSlope=2, RescaleIntercept=-1000)).pixels
    np.testing.assert_array_equal(rescaled, png)
    inverted = decode_image(make_dicom(blank, photometric="MONOCHROME1")).pixels
    np.testing.assert_array_equal(inverted, 255 - png)


def test_a_blank_dicom_through_a_voi_lut_keeps_the_grey_the_lut_gives_it():
    """A VOI LUT Sequence maps the one stored value to one output; that output's place among the LUT's outputs
    is the grey to show (it decoded to black: a min-max stretch of a single value)."""
    ramp = list(range(1024))  # identity over 10 bits
    blank = make_dicom(np.full((32, 32), 512, np.uint16), bits_stored=10, VOILUTSequence=[voi_lut_item(ramp)])
    assert set(decode_image(blank).pixels.ravel().tolist()) == {128}  # rint(255 x 512 / 1023)
    inverse = make_dicom(np.full((32, 32), 100, np.uint16), bits_stored=10,
                         VOILUTSequence=[voi_lut_item([1023 - index for index in range(1024)])])
    assert set(decode_image(inverse).pixels.ravel().tolist()) == {230}  # rint(255 x 923 / 1023)
    inverted = make_dicom(np.full((32, 32), 512, np.uint16), bits_stored=10, photometric="MONOCHROME1",
                          VOILUTSequence=[voi_lut_item(ramp)])
    assert set(decode_image(inverted).pixels.ravel().tolist()) == {127}


def test_the_nearly_uniform_rule_still_fires_for_a_grey_blank_dicom():
    from cxr.imaging import resize_square
    from cxr.population import verdict_for

    decoded = decode_image(make_dicom(np.full((64, 64), 2048, np.uint16), bits_stored=12), name="blank.dcm")
    seen = resize_square(decoded.pixels, 32)  # what the model and the contrast rule see
    assert seen[0, 0] == 128  # grey, not black
    verdict = verdict_for(decoded.info, pixels=seen)
    assert verdict.outside and verdict.reason.startswith("this image is nearly uniform (grey-level spread 0.0;")
