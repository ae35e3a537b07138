"""DICOM: the modality LUT and the VOI LUT or window applied as the file asks, MONOCHROME1 inverted so bones
are bright, the first frame of a multi-frame file; pydicom (and pylibjpeg for compressed pixel data) imported
when first used. Any failure of pydicom on malformed input becomes ``ImageError``.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np

from cxr.errors import ImageError
from cxr.pixels import (
    ACCEPTED,
    DecodedImage,
    ImageInfo,
    check_size,
    describe_bytes,
    first_line,
    scale_to_uint8,
    to_gray_uint8,
)


def _dicom_text(dataset: Any, keyword: str) -> str | None:
    value = dataset.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def decode_dicom(data: bytes, name: str, max_pixels: int, min_side: int) -> DecodedImage:
    """Decode a DICOM file; any unexpected failure in pydicom on malformed input becomes ``ImageError``."""
    try:
        return _decode_dicom_unguarded(data, name, max_pixels, min_side)
    except (ImageError, MemoryError):
        raise
    except Exception as error:  # pydicom parses elements lazily, so malformed ones fail late, in any type
        raise ImageError(f"{name!r} is a damaged DICOM file ({type(error).__name__}: {first_line(error)}). "
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
        raise ImageError(f"{name!r} is not a readable DICOM file ({first_line(error)}). Expected a "
                         f"{ACCEPTED} file; export the image again from the viewer or PACS.") from None
    has_pixels = any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    rows, columns = _stated_size(rows, columns, dataset, data, name, has_pixels=has_pixels)
    check_size(columns, rows, name, max_pixels, min_side, "dicom")
    if not has_pixels:
        raise ImageError(f"{name!r} is a DICOM file without pixel data (it has a {columns} x {rows} header "
                         f"but no PixelData element), so there is no image to read. Expected a DICOM image; "
                         f"export the X-ray image itself.")
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    num_frames = max(1, _header_integer(dataset.get("NumberOfFrames") or 1, 1))
    bit_depth = _header_integer(dataset.get("BitsStored") or dataset.get("BitsAllocated") or 8, 8)

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
                raise ImageError(f"{name!r}: the DICOM palette cannot be applied ({first_line(error)}). "
                                 f"Export the image as grayscale.") from None
            mode = "palette"
        else:
            mode = "rgb"
        pixels, is_color_photo = to_gray_uint8(array, order="rgb")  # pydicom returns RGB order
    height, width = pixels.shape
    info = ImageInfo(name=name, format="dicom", width=int(width), height=int(height), mode=mode,
                     bit_depth=bit_depth, body_part=_dicom_text(dataset, "BodyPartExamined"),
                     view_position=_dicom_text(dataset, "ViewPosition"),
                     modality=_dicom_text(dataset, "Modality"), is_color_photo=is_color_photo,
                     num_frames=num_frames, patient_age=_dicom_text(dataset, "PatientAge"))
    return DecodedImage(pixels=np.ascontiguousarray(pixels, dtype=np.uint8), info=info)


def _stated_size(rows: Any, columns: Any, dataset: Any, data: bytes, name: str, *, has_pixels: bool) -> tuple[int, int]:
    """Rows and Columns as integers, or the refusal that says what the file is instead: pixel data without a
    size, not a DICOM at all, a DICOM without an image (a report), or a size that is not a number."""
    if rows is None or columns is None:
        if has_pixels:
            raise ImageError(f"{name!r}: the DICOM file has pixel data but no Rows/Columns, so its size is "
                             f"unknown. Expected an image DICOM; export the image again.")
        if len(dataset) == 0 or not (data[128:132] == b"DICM" or looks_like_dicom_dataset(data)):
            raise ImageError(f"{name!r} is not an image this program can read ({describe_bytes(data)}). "
                             f"Accepted formats are {ACCEPTED}; export or convert the file to one of them.")
        raise ImageError(f"{name!r} is a DICOM file without pixel data (for example a structured report "
                         f"or a study description), so there is no image to read. Expected a DICOM "
                         f"image; export the X-ray image itself.")
    try:
        return int(rows), int(columns)
    except (TypeError, ValueError):
        raise ImageError(f"{name!r}: the DICOM Rows/Columns ({rows!r}, {columns!r}) are not numbers. "
                         f"Expected an image DICOM; export the image again.") from None


def _header_integer(value: Any, default: int) -> int:
    """A header number for ``ImageInfo`` (frames, bits): ``default`` when it is not a number; never a refusal."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


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
                         f"({first_line(error)}). Expected uncompressed, JPEG or JPEG 2000 pixel data "
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
    window = _voi_window(dataset)
    if window is not None and "VOILUTSequence" not in dataset:
        # Our own window straight to 0-255, so the radiologist's window is kept as chosen instead of
        # being stretched again by the image's range.
        pixels = _window_to_uint8(values, *window)
    elif "VOILUTSequence" in dataset:
        try:
            shown = np.asarray(apply_voi_lut(values, dataset, index=0), dtype=np.float64)
            pixels = scale_to_uint8(shown) if shown.max() > shown.min() else _lut_level(shown, dataset)
        except Exception:  # a malformed VOI LUT: fall back to the image's own range
            pixels = None
    if pixels is None:
        pixels = scale_to_uint8(values) if values.max() > values.min() else _blank_level(array, dataset)
    if invert:
        pixels = 255 - pixels
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def _lut_level(shown: np.ndarray, dataset: Any) -> np.ndarray:
    """A blank frame after a VOI LUT as uint8 at its level within the outputs the LUT can give (its lowest to its
    highest entry, found by passing every input it maps through it), as ``_blank_level`` does for a frame without
    one: a min-max stretch of one value would give black whatever grey the LUT chose."""
    from pydicom.pixels import apply_voi_lut

    entries, first = (int(value) for value in dataset.VOILUTSequence[0].LUTDescriptor[:2])
    inputs = np.arange(first, first + (entries or 65536), dtype=np.float64)
    outputs = np.asarray(apply_voi_lut(inputs, dataset, index=0), dtype=np.float64)
    low, high = float(outputs.min()), float(outputs.max())
    return _flat_at(shown.shape, (float(shown.flat[0]) - low) / (high - low) if high > low else 0.0)


def _blank_level(array: np.ndarray, dataset: Any) -> np.ndarray:
    """A blank frame (one stored value, no window) as ``array``'s shape uint8 at its level within the range
    ``BitsStored`` and ``PixelRepresentation`` allow (0..2^b - 1, or -2^(b-1)..2^(b-1) - 1 when signed), as
    ``scale_to_uint8`` keeps a flat 16-bit PNG's level: a min-max stretch of one value would give black.
    Stored values, not rescaled ones: the modality rescale is linear, so the relative level is the same."""
    bits = array.dtype.itemsize * 8
    try:
        bits = min(bits, max(1, int(dataset.get("BitsStored") or bits)))
    except (TypeError, ValueError):
        pass
    if not np.issubdtype(array.dtype, np.integer):  # float pixel data has no stored range: black, as before
        return np.zeros(array.shape, np.uint8)
    signed = np.issubdtype(array.dtype, np.signedinteger)
    low = -(2 ** (bits - 1)) if signed else 0
    high = low + 2 ** bits - 1
    return _flat_at(array.shape, (float(array.flat[0]) - low) / (high - low))


def _flat_at(shape: tuple[int, ...], level: float) -> np.ndarray:
    """A uint8 image of ``shape`` all at ``level`` (0 black, 1 white; clipped) of the 0-255 range."""
    return np.full(shape, np.clip(np.rint(255.0 * level), 0, 255), np.uint8)


def _first_number(value: Any) -> float:
    """The first value of a DICOM number that may be multi-valued (several windows)."""
    if not isinstance(value, (str, bytes, int, float)) and hasattr(value, "__getitem__"):
        value = value[0]
    return float(value)


def _voi_window(dataset: Any) -> tuple[str, float, float] | None:
    """``(function, center, width)`` of the first window when the file has a valid one, else ``None``.

    ``function`` is the VOI LUT Function: LINEAR (the default when absent) with a width over 1, or
    LINEAR_EXACT or SIGMOID with a positive width; any other function is not applied.
    """
    if "WindowCenter" not in dataset or "WindowWidth" not in dataset:
        return None
    function = str(dataset.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        return None
    try:
        center, width = _first_number(dataset.WindowCenter), _first_number(dataset.WindowWidth)
    except (TypeError, ValueError, IndexError):
        return None
    smallest_width = 1.0 if function == "LINEAR" else 0.0  # LINEAR divides by width - 1
    if not (np.isfinite(center) and np.isfinite(width)) or width <= smallest_width:
        return None
    return function, center, width


def _window_to_uint8(values: np.ndarray, function: str, center: float, width: float) -> np.ndarray:
    """The window of PS3.3 C.11.2.1.2 with the output range 0-255: ``values`` any shape, float64 ->
    the same shape uint8. LINEAR: ``((x - (c - 0.5)) / (w - 1) + 0.5) * 255``; LINEAR_EXACT:
    ``((x - c) / w + 0.5) * 255``, both clipped to 0-255; SIGMOID: ``255 / (1 + exp(-4 (x - c) / w))``.
    """
    if function == "SIGMOID":
        with np.errstate(over="ignore"):  # far below the center exp overflows to inf: 255 / inf = 0
            scaled = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "LINEAR_EXACT":
        scaled = ((values - center) / width + 0.5) * 255.0
    else:
        scaled = ((values - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def looks_like_dicom_dataset(data: bytes) -> bool:
    """A DICOM stream without the 128-byte preamble starts with a little-endian tag of group 0002
    (file meta) or 0008 (identifying information), then an element number; a VR or length follows."""
    if len(data) < 8:
        return False
    group, element = struct.unpack("<HH", data[:4])
    return group in (0x0002, 0x0008) and element < 0x0200


__all__ = ["decode_dicom", "looks_like_dicom_dataset"]
