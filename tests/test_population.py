"""The population verdict: metadata rules on DICOMs written here with pydicom, image rules, combining."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_data import make_dicom

from cxr.imaging import decode_image
from cxr.population import (
    PopulationVerdict,
    combine,
    metadata_reasons,
    parse_dicom_age,
    pixel_reason,
    verdict_for,
)

SHARED_DICOM = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom"


def write_dicom(**attributes) -> bytes:
    """A small CR chest PA DICOM in memory; ``attributes`` override or add header elements."""
    return make_dicom(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1)), **attributes)


def dicom_verdict(**attributes) -> PopulationVerdict:
    info = decode_image(write_dicom(**attributes), name="test.dcm").info
    return verdict_for(info)


def test_a_pediatric_chest_pa_dicom_has_no_reasons_and_no_detector_means_unknown():
    verdict = dicom_verdict(PatientAge="004Y")
    assert verdict.status == "unknown"
    assert verdict.reasons == () and not verdict.outside


def test_an_adult_age_in_the_header_puts_the_image_outside():
    info = decode_image(write_dicom(PatientAge="045Y"), name="adult.dcm").info
    assert info.patient_age == "045Y"
    verdict = verdict_for(info)
    assert verdict.outside
    assert verdict.reason == "DICOM says the patient is 45 years old (this model was trained on patients under 18)"


@pytest.mark.parametrize("age, years", [("045Y", 45.0), ("006M", 0.5), ("003D", 3 / 365.25), ("62", 62.0),
                                        ("017Y", 17.0), ("", None), ("abc", None), (None, None)])
def test_dicom_ages_are_read_in_their_units(age, years):
    assert parse_dicom_age(age) == (pytest.approx(years) if years is not None else None)


@pytest.mark.parametrize("age, outside", [("017Y", False), ("018Y", True), ("006M", False), ("090Y", True)])
def test_the_age_rule_uses_the_training_range(age, outside):
    assert dicom_verdict(PatientAge=age).outside is outside


def test_the_age_rule_follows_the_models_own_range_and_can_be_off():
    info = decode_image(write_dicom(PatientAge="045Y"), name="adult.dcm").info
    assert metadata_reasons(info, training_ages=(18.0, 120.0)) == []
    assert metadata_reasons(info, training_ages=None) == []
    young = decode_image(write_dicom(PatientAge="010Y"), name="child.dcm").info
    assert metadata_reasons(young, training_ages=(18.0, 120.0)) == [
        "DICOM says the patient is 10 years old (this model was trained on patients aged 18 to 120)"]


def test_a_body_part_other_than_chest_is_outside():
    verdict = dicom_verdict(BodyPartExamined="EXTREMITY")
    assert verdict.outside and verdict.reasons == ("DICOM says this is an EXTREMITY image",)
    assert dicom_verdict(BodyPartExamined="THORAX").status == "unknown"


@pytest.mark.parametrize("view", ["LL", "RL", "LATERAL"])
def test_a_lateral_view_is_outside(view):
    verdict = dicom_verdict(ViewPosition=view)
    assert verdict.outside and "lateral view" in verdict.reason
    assert dicom_verdict(ViewPosition="AP").status == "unknown"


@pytest.mark.parametrize("modality, outside", [("CT", True), ("MR", True), ("US", True), ("DX", False),
                                               ("CR", False)])
def test_a_modality_other_than_a_radiograph_is_outside(modality, outside):
    verdict = dicom_verdict(Modality=modality)
    assert verdict.outside is outside
    if outside:
        assert verdict.reason == f"DICOM says the modality is {modality}, not a radiograph (CR/DX)"


def test_several_reasons_are_all_given():
    verdict = dicom_verdict(PatientAge="045Y", BodyPartExamined="KNEE", Modality="MR")
    assert len(verdict.reasons) == 3
    assert verdict.reason == "; ".join(verdict.reasons)


def test_a_colour_photo_and_an_extreme_aspect_feed_the_verdict():
    import cv2

    rng = np.random.default_rng(0)
    photo = np.zeros((120, 160, 3), np.uint8)
    photo[..., 0], photo[..., 1], photo[..., 2] = 200, 60, 30  # strongly coloured (BGR)
    photo = np.clip(photo + rng.integers(0, 30, photo.shape), 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", photo)
    info = decode_image(encoded.tobytes(), name="photo.png").info
    assert verdict_for(info).reasons == ("this looks like a colour photograph, not an X-ray",)
    strip = verdict_for(shape=(100, 500))
    assert strip.outside and "aspect ratio 5.0:1" in strip.reason
    assert verdict_for(shape=(500, 600)).status == "unknown"


def test_the_detector_score_decides_when_no_rule_fires():
    inside = combine([], score=3.0, percentile=40.0, threshold=5.0)
    assert inside.status == "in" and inside.reasons == () and inside.percentile == 40.0
    outside = combine([], score=7.0, percentile=100.0, threshold=5.0)
    assert outside.outside and outside.reasons == (pixel_reason(),)
    assert outside.reason == "looks unlike the pediatric chest X-rays this model was trained on"
    ruled = combine(["DICOM says this is a lateral view"], score=3.0, threshold=5.0)
    assert ruled.outside and ruled.reasons == ("DICOM says this is a lateral view",)


def test_the_verdict_dict_is_plain_json():
    import json

    verdict = combine(["a", "b"], score=7.0, percentile=99.5, threshold=5.0)
    data = json.loads(json.dumps(verdict.to_dict()))
    assert data == {"status": "outside", "score": 7.0, "percentile": 99.5, "threshold": 5.0,
                    "reasons": [pixel_reason(), "a", "b"], "reason": "; ".join([pixel_reason(), "a", "b"])}
    with pytest.raises(ValueError, match="population status 'maybe'"):
        PopulationVerdict(status="maybe")


@pytest.mark.skipif(not (SHARED_DICOM / "RG3_J2KI_tibia.dcm").is_file(), reason="shared DICOM files absent")
def test_the_shared_tibia_and_adult_dicoms_are_outside_by_their_headers():
    pytest.importorskip("openjpeg", reason="JPEG 2000 DICOMs need pylibjpeg-openjpeg")
    tibia = verdict_for(decode_image(SHARED_DICOM / "RG3_J2KI_tibia.dcm").info)
    assert tibia.outside and "EXTREMITY" in tibia.reason
    chest = verdict_for(decode_image(SHARED_DICOM / "RG1_J2KI.dcm").info)
    assert chest.status == "unknown"


def test_a_nearly_uniform_image_is_outside_and_a_real_contrast_is_not():
    from cxr.population import MIN_CONTRAST_STD

    flat = np.full((64, 64), 128, np.uint8)
    flat[0, 0] = 140  # a speck does not make a picture
    verdict = verdict_for(shape=flat.shape, pixels=flat)
    assert verdict.outside and verdict.reason.startswith("this image is nearly uniform (grey-level spread 0.2;")
    checker = (np.indices((64, 64)).sum(axis=0) % 2 * 2 * (MIN_CONTRAST_STD + 1) + 100).astype(np.uint8)
    assert verdict_for(shape=checker.shape, pixels=checker).status == "unknown"
