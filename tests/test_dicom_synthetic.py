"""MONOCHROME1 DICOM with a VOI window, written here with pydicom (no shared data needed).

MONOCHROME1 stores bone dark (0 = white); the decoder applies the modality LUT, then the file's
window, then inverts, so the result looks like a MONOCHROME2 radiograph. Expected pixels are worked
out from PS3.3 C.11.2.1.2.1 by hand: y = ((x - (c - 0.5)) / (w - 1) + 0.5) clipped to [0, 1], x 255,
rounded; then 255 - y for MONOCHROME1.
"""

from __future__ import annotations

import numpy as np
from helpers_data import make_dicom
from pydicom.multival import MultiValue
from pydicom.valuerep import DSfloat
from test_imaging import gradient

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
