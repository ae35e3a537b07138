"""Hostile and broken uploads and data sets, end to end: through the prediction path behind the Predict page and
through the page itself (AppTest). Each bad file ends in a message naming it, never a stack trace; the other files
of the same upload still get their answers; the page keeps serving; nothing already stored changes.

The decoder's own cases (each format, bombs, truncation, DICOM details) are tested one by one in
tests/test_imaging.py and tests/test_imaging_fuzz.py, and the data set ones (zip slip, absolute paths, symlinks,
zip bomb, one class, empty folder, non-image folder, damaged cache, pickled .npz) in tests/test_datasets.py;
docs/reliability.md lists them. Here they meet the app as a user would bring them.
"""

from __future__ import annotations

import hashlib
import io
import struct
import tomllib
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers_data import make_dicom
from test_model_files import brightness_model, expected_probability

from cxr import datasets, runs
from cxr.config import DataConfig, TrainingConfig
from cxr.errors import DatasetError
from cxr.predict import Predictor

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODEL_SIZE = 24


# ------------------------------------------------------------------------------------------------ files
def encode(image: np.ndarray, extension: str, params: list[int] | None = None) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(extension, image, params or [])
    assert ok  # test helper: encoding a valid array cannot fail
    return encoded.tobytes()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(side: int = 100_000) -> bytes:
    """A 100,000 x 100,000 gray PNG header (10 G pixels) with a few bytes of image data: a decompression bomb."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * (side + 1) * 4, 9)  # four rows of zeros: the rest "would follow"
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def dicom(pixels: np.ndarray | None, *, body_part: str = "CHEST", rows: int = 64, columns: int = 64) -> bytes:
    """A 16-bit CR DICOM of ``pixels``, or of ``rows`` x ``columns`` with no pixel data when ``pixels`` is None."""
    stored = np.zeros((rows, columns), np.uint16) if pixels is None else pixels.astype(np.uint16)
    return make_dicom(stored, with_pixels=pixels is not None, BodyPartExamined=body_part)


def gradient(size: int = 128) -> np.ndarray:  # 128 px: above the "very small image" warning
    return np.tile(np.linspace(0, 255, size), (size, 1)).astype(np.uint8)


@pytest.fixture(scope="module")
def photograph() -> bytes:
    """A 40 MB colour "photograph" (5,200 x 4,000 colour noise at JPEG quality 100, 20.8 M pixels)."""
    generator = np.random.default_rng(7)
    data = encode(generator.integers(0, 256, (4000, 5200, 3), dtype=np.uint8), ".jpg", [1, 100])  # 1 = QUALITY
    assert 38e6 < len(data) < 50 * 1024**2, len(data)
    return data


def bad_uploads() -> list[tuple[str, bytes, str]]:
    """(file name, bytes, a fragment the error message must hold) for files that cannot be answered."""
    jpeg = encode(gradient(), ".jpg")
    rgb16 = np.zeros((64, 64), np.uint16)
    return [
        ("empty.png", b"", "is empty (0 bytes)"),
        ("notes.png", b"Patient list\nJohn, 42\n", "it looks like text"),
        ("cut.jpg", jpeg[: len(jpeg) // 2], "truncated JPEG"),
        ("bomb.png", png_bomb(), "guards against decompression bombs"),
        ("report.dcm", dicom(None), "without pixel data"),
        ("cut16.dcm", dicom(rgb16)[:-3000], "cannot be decoded"),
    ]


def good_uploads() -> list[tuple[str, bytes, np.ndarray | None, str | None]]:
    """(file name, bytes, expected decoded gray (h, w) uint8 or None when not checked, expected warning)."""
    gray = gradient()
    gray16 = (gray.astype(np.uint16) * 257)  # full 16-bit range: scales back to the same 8-bit picture
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    leg = (gray.astype(np.uint16) * 16)  # 12-bit values: min-max scaling gives the gradient back
    return [
        ("gray.png", encode(gray, ".png"), gray, None),
        ("gray16.png", encode(gray16, ".png"), gray, None),
        ("rgba.png", encode(rgba, ".png"), gray, None),
        ("leg.dcm", dicom(leg, body_part="LEG"), None, "body part 'LEG', not chest"),
    ]


# Names a careless or hostile user could give; each must only ever be shown, never used as a path.
ODD_NAMES = ["../../../../etc/passwd.png", "..\\..\\windows\\win.ini.png", "/absolute/path.png",
             "<img src=x onerror=alert(1)>.png", "name with spaces, ünïcödé & 🚑.png", "$(rm -rf ~);`id`.png",
             "a" * 300 + ".png", "nul\x00byte.png"]


def write_folder(root: Path, *, per_class: int = 6, size: int = 32) -> Path:
    """A tiny data set in the tutorial's layout (root/{train,test}/{normal,pneumonia}/), Kermany-style names (one
    patient per image), 6 distinct images per class and split: 24 images. (Written here rather than imported from
    conftest: ``from conftest import`` can resolve to tests/e2e/conftest.py when the whole suite runs.)"""
    generator = np.random.default_rng(5)
    for split_index, split in enumerate(("train", "test")):
        for label, class_name in enumerate(("normal", "pneumonia")):
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                patient = 1000 * split_index + 100 * label + index
                name = f"IM-{patient:04d}-0001.png" if label == 0 else f"person{patient}_bacteria_{index}.png"
                image = generator.integers(0, 255, (size, size), dtype=np.uint8)
                (folder / name).write_bytes(encode(image, ".png"))
    return root


def files_under(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder``."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture
def stored(cxr_home) -> dict:
    """A home as a demo server has it: an imported data set and a finished run with the 24 px brightness
    model (threshold 0.5, no calibration). Returns the run id and the files to check for loss."""
    generator = np.random.default_rng(0)
    np.savez(cxr_home / "tiny.npz", train_images=generator.integers(0, 255, (12, 32, 32), dtype=np.uint8),
             train_labels=np.arange(12) % 2, test_images=generator.integers(0, 255, (8, 32, 32), dtype=np.uint8),
             test_labels=np.arange(8) % 2)
    datasets.import_dataset(cxr_home / "tiny.npz", name="tiny", config=DataConfig(image_size=32))
    run_dir = runs.new_run("tiny", TrainingConfig(image_size=32, epochs=1))
    brightness_model(MODEL_SIZE).save(run_dir / "model.keras")
    runs.write_status(run_dir, state="finished")
    return {"run_id": run_dir.name, "before": files_under(cxr_home)}


# --------------------------------------------------------------------------------- the prediction path
def test_every_bad_upload_gets_its_own_message_and_the_good_ones_their_answers(stored, cxr_home, photograph):
    predictor = Predictor.load(stored["run_id"])
    bad, good = bad_uploads(), good_uploads()
    uploads = [(name, data) for name, data, _ in bad] + [(name, data) for name, data, _, _ in good]
    uploads.append(("photo.jpg", photograph))
    results = predictor.predict([data for _, data in uploads], names=[name for name, _ in uploads])
    assert [result.name for result in results] == [name for name, _ in uploads]

    for result, (name, _, fragment) in zip(results, bad, strict=False):
        assert result.error is not None and result.probability is None, name
        assert repr(name) in result.error and fragment in result.error, result.error
        assert "Traceback" not in result.error and len(result.error) < 600
    answered = results[len(bad):]
    assert all(result.ok for result in answered), [result.error for result in answered]
    for result, (name, _, expected_gray, warning) in zip(answered, good, strict=False):
        if expected_gray is not None:
            from cxr.imaging import resize_square

            np.testing.assert_array_equal(result.image, resize_square(expected_gray, MODEL_SIZE))
        assert result.probability == pytest.approx(expected_probability(result.image), abs=1e-5), name
        assert (warning is None) == (not result.warnings), (name, result.warnings)
        if warning:
            assert any(warning in text for text in result.warnings), result.warnings
    photo = answered[-1]
    assert photo.info.width == 5200 and photo.info.height == 4000
    assert any("colour photograph" in text for text in photo.warnings)
    assert files_under(cxr_home) == stored["before"]  # nothing written, nothing lost


def test_odd_file_names_are_only_shown_never_used_as_paths(stored, cxr_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    predictor = Predictor.load(stored["run_id"])
    image = encode(gradient(), ".png")
    results = predictor.predict([image] * len(ODD_NAMES), names=ODD_NAMES)
    assert [result.name for result in results] == ODD_NAMES
    assert all(result.ok for result in results)
    assert len({result.probability for result in results}) == 1  # the same picture, the same answer
    assert not list(tmp_path.iterdir())  # nothing appeared where the names point
    assert files_under(cxr_home) == stored["before"]


def test_uploaded_data_set_with_a_path_in_its_name_stays_inside_the_data_folder(cxr_home):
    generator = np.random.default_rng(1)
    buffer = io.BytesIO()
    images = generator.integers(0, 255, (8, 32, 32), dtype=np.uint8)
    np.savez(buffer, train_images=images, train_labels=np.arange(8) % 2, test_images=images,
             test_labels=np.arange(8) % 2)
    report = datasets.read_upload(buffer.getvalue(), "../../../evil name;$(id).npz", config=DataConfig(image_size=32))
    assert report.path.resolve().parent == (cxr_home / "datasets").resolve()
    assert "/" not in report.name and ".." not in report.name and "$" not in report.name
    outside = [path for path in cxr_home.parent.rglob("*evil*") if cxr_home not in path.parents]
    assert not outside


@pytest.mark.parametrize("entry, message", [("../escape.png", "outside its folder"),
                                            ("/abs/escape.png", "absolute path")])
def test_hostile_zip_under_an_existing_name_leaves_the_stored_data_set_intact(stored, cxr_home, tmp_path, entry,
                                                                              message):
    """A refused import never damages what is stored under the same name (the cache is swapped in only after
    a complete, valid import). The zip is a valid data set but for the one hostile entry."""
    before = datasets.load_dataset("tiny").images("train").copy()
    source = write_folder(tmp_path / "source")
    clean, path = tmp_path / "clean.zip", tmp_path / "hostile.zip"
    for target, extra in ((clean, None), (path, entry)):
        with zipfile.ZipFile(target, "w") as archive:
            for file in sorted(source.rglob("*.png")):
                archive.write(file, "data/" + file.relative_to(source).as_posix())
            if extra:
                archive.writestr(extra, encode(gradient(), ".png"))
    with pytest.raises(DatasetError, match=message):
        datasets.import_dataset(path, name="tiny", config=DataConfig(image_size=32))
    assert files_under(cxr_home) == stored["before"]
    np.testing.assert_array_equal(datasets.load_dataset("tiny").images("train"), before)
    assert not (tmp_path / "escape.png").exists() and not Path("/abs/escape.png").exists()
    # Without the hostile entry the same zip imports: the refusal above was that entry's.
    assert datasets.import_dataset(clean, name="control", config=DataConfig(image_size=32)).num_images == 24


def test_thousands_of_non_image_files_among_a_few_images_are_skipped(tmp_path):
    # The time it takes is printed by benchmarks/bench_guards.py (target under 60 s), not limited here.
    root = write_folder(tmp_path / "mixed")
    junk = root / "train" / "normal"
    for index in range(1500):
        (junk / f"notes-{index}.txt").write_text("not an image")
    for index in range(500):  # named like images, but text: each must be decoded, refused and listed
        (junk / f"IM-9{index:03d}-0001.png").write_bytes(b"fake png " + str(index).encode())
    report = datasets.import_dataset(root, config=DataConfig(image_size=32))
    assert report.num_images == 24
    assert len(report.skipped) == 500 and all("not an image" in item["reason"] for item in report.skipped)


# ---------------------------------------------------------------------------------------- the page itself
@pytest.fixture
def predict_page(stored, monkeypatch):
    import streamlit as st
    from helpers_app import open_page, prepare_app

    prepare_app(monkeypatch, bundled_model=PROJECT_ROOT / "no-bundled-model-in-these-tests")

    def open_predict_page():
        at = open_page("pages/predict.py", timeout=120)
        assert at.selectbox[0].value == stored["run_id"]
        return at

    yield open_predict_page
    st.cache_resource.clear()


def page_text(at) -> str:
    parts = []
    for kind in ("error", "warning", "success", "info", "markdown", "caption", "exception"):
        parts += [str(getattr(element, "value", "")) for element in getattr(at, kind)]
    return "\n".join(parts)


def test_predict_page_answers_bad_uploads_with_messages_and_keeps_serving(predict_page, stored, cxr_home,
                                                                          photograph):
    at = predict_page()
    bad, good = bad_uploads(), good_uploads()
    uploads = [(name, data, "application/octet-stream") for name, data, _ in bad]
    uploads += [(name, data, "application/octet-stream") for name, data, _, _ in good]
    uploads.append(("photo.jpg", photograph, "image/jpeg"))
    at.file_uploader[0].set_value(uploads)
    at.run()
    assert not at.exception
    text = page_text(at)
    assert "Traceback" not in text and "File \"" not in text
    errors = [error.value for error in at.error]
    assert len(errors) == len(bad), errors
    for (name, _, fragment), message in zip(bad, errors, strict=True):
        assert name in message and fragment in message
    answered = len(good) + 1
    assert any(f"{answered} of {len(uploads)} image(s) predicted" in caption.value for caption in at.caption)
    table = at.dataframe[0].value
    assert table["file"].tolist() == [name for name, _, _ in uploads]
    assert any("body part 'LEG'" in warning.value for warning in at.warning)
    assert any("colour photograph" in warning.value for warning in at.warning)

    # The same session goes on serving: a good file alone is answered.
    at.file_uploader[0].set_value([("again.png", encode(gradient(), ".png"), "image/png")])
    at.run()
    assert not at.exception and not at.error
    assert any("1 of 1 image(s) predicted" in caption.value for caption in at.caption)
    assert files_under(cxr_home) == stored["before"]


def test_predict_page_shows_odd_names_as_text(predict_page):
    at = predict_page()
    image = encode(gradient(), ".png")
    names = ODD_NAMES[:6]
    at.file_uploader[0].set_value([(name, image, "image/png") for name in names] + [("<b>bad</b>.png", b"", "")])
    at.run()
    assert not at.exception
    assert at.dataframe[0].value["file"].tolist() == [*names, "<b>bad</b>.png"]
    # st.error renders Markdown and never raw HTML (alerts have no unsafe_allow_html), so a tag in a name is text.
    assert len(at.error) == 1 and "'<b>bad</b>.png' is empty" in at.error[0].value


def test_uploads_are_limited_to_50_mb_by_the_server_configuration(predict_page, photograph):
    """``.streamlit/config.toml`` sets ``server.maxUploadSize = 50`` (MB): the browser refuses a larger file
    before sending it, and Streamlit's upload route answers 413 to a client that sends one anyway. The 40 MB
    photograph is below the limit and is answered (test above)."""
    from streamlit import config

    settings = tomllib.loads((PROJECT_ROOT / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["maxUploadSize"] == 50
    assert settings["client"]["showErrorDetails"] == "none"  # no stack trace in the browser, whatever happens
    assert len(photograph) < 50 * 1024**2
    at = predict_page()
    # The uploader tells the browser the server's limit (50 when run from the project folder, as in production).
    assert at.file_uploader[0].proto.max_upload_size_mb == config.get_option("server.maxUploadSize")


def test_symlinks_in_a_server_folder_are_not_followed(tmp_path):
    """A link in a data folder could point anywhere on the server (a secret, another user's data): skipped."""
    root = write_folder(tmp_path / "linked")
    outside = tmp_path / "outside.png"
    outside.write_bytes(encode(gradient(32), ".png"))
    (root / "train" / "normal" / "IM-7777-0001.png").symlink_to(outside)
    (root / "train" / "pneumonia" / "person7777_bacteria_1.png").symlink_to("/etc/hostname")
    (root / "train" / "linked-folder").symlink_to(tmp_path)
    report = datasets.import_dataset(root, config=DataConfig(image_size=32))
    files = datasets.load_dataset(report.name).manifest["file"].tolist()
    assert report.num_images == 24 and not any("7777" in file or "linked" in file for file in files)
