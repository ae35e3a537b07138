"""The Data page (AppTest): import from a server folder, a .zip and an .npz, the report, the explorer tabs,
and the error paths (no data yet, a bad path, a bad upload). Uses the real cxr.datasets on tiny images."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers_app import REPO_ROOT, button, metric_values, open_page, prepare_app, widget


def write_png(path: Path, pixels: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)


def make_folder(root: Path, per_class: int = 4) -> Path:
    """train/ and test/ x NORMAL/ and PNEUMONIA/ of 40x40 PNGs (one patient per file), plus one broken file."""
    generator = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", 2)):
        for label, folder in enumerate(("NORMAL", "PNEUMONIA")):
            for index in range(count):
                pixels = (generator.random((40, 40)) * 100 + 100 * label).astype(np.uint8)
                write_png(root / split / folder / f"{split}-{folder}-{index}.png", pixels)
    (root / "train" / "NORMAL" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def make_npz(num_images: int = 8) -> bytes:
    generator = np.random.default_rng(1)
    arrays = {}
    for split in ("train", "test"):
        arrays[f"{split}_images"] = generator.integers(0, 255, (num_images, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(num_images) % 2).reshape(-1, 1)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    prepare_app(monkeypatch)
    return open_page("pages/data.py")


def import_button(at):
    return button(at, "Import")


def test_without_data_the_page_says_what_to_import(app):
    assert any("No data set imported yet" in info.value for info in app.info)
    import_button(app).click()
    app.run()
    assert any("Nothing to import" in error.value for error in app.error)


def test_import_a_server_folder_shows_progress_report_and_class_balance(app, tmp_path):
    folder = make_folder(tmp_path / "xrays")
    app.text_input[0].input(str(folder))
    app.text_input[1].input("tiny")
    app.number_input[0].set_value(32)
    import_button(app).click()
    app.run()
    assert not app.exception
    assert not app.error, [error.value for error in app.error]
    assert any("tiny" in success.value for success in app.success)
    values = metric_values(app)
    assert values["Files found"] == "13"
    assert values["Images kept"] == "12"
    assert values["Skipped (unreadable)"] == "1"
    skipped = app.dataframe[0].value
    assert skipped["file"].str.contains("broken.png").any()
    # The explorer opens on the class balance of the new data set.
    assert app.selectbox[0].value == "tiny"
    assert len(app.get("vega_lite_chart")) == 1


def test_a_folder_that_does_not_exist_gives_a_clear_error(app, tmp_path):
    app.text_input[0].input(str(tmp_path / "nowhere"))
    import_button(app).click()
    app.run()
    assert not app.exception
    messages = [error.value for error in app.error]
    assert len(messages) == 1 and "Importing the data set failed" in messages[0]
    assert "nowhere" in messages[0]


def test_a_bad_zip_upload_gives_a_clear_error_and_a_good_one_imports(app, tmp_path):
    app.file_uploader[0].set_value(("bad.zip", b"this is not a zip", "application/zip"))
    import_button(app).click()
    app.run()
    assert not app.exception
    assert any("Importing the data set failed" in error.value for error in app.error)

    folder = make_folder(tmp_path / "xrays")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in folder.rglob("*.png"):
            archive.write(file, f"chest_xray/{file.relative_to(folder).as_posix()}")
    app.file_uploader[0].set_value(("chest.zip", buffer.getvalue(), "application/zip"))
    app.number_input[0].set_value(32)
    import_button(app).click()
    app.run()
    assert not app.error, [error.value for error in app.error]
    assert metric_values(app)["Images kept"] == "12"


def test_npz_upload_and_the_explorer_tabs(app):
    app.file_uploader[1].set_value(("organ.npz", make_npz(), "application/octet-stream"))
    app.text_input[1].input("npz-set")
    app.number_input[0].set_value(32)
    import_button(app).click()
    app.run()
    assert not app.error, [error.value for error in app.error]
    assert metric_values(app)["Images kept"] == "16"

    app.session_state["data_tab"] = "Sample images"
    app.run()
    assert not app.exception and not app.error
    assert len(app.get("image")) == 2  # one gallery row per class

    app.session_state["data_tab"] = "Sizes and intensities"
    app.run()
    assert not app.error, [error.value for error in app.error]
    assert len(app.get("vega_lite_chart")) == 2  # original sizes and intensities
    assert any("width 28–28 px" in caption.value for caption in app.caption)


def test_two_sources_at_once_are_refused(app, tmp_path):
    app.text_input[0].input(str(tmp_path))
    app.file_uploader[1].set_value(("organ.npz", make_npz(), "application/octet-stream"))
    import_button(app).click()
    app.run()
    assert any("Several sources given" in error.value for error in app.error)


def test_augmentation_preview_shows_the_original_and_random_augmentations(app, tmp_path):
    app.text_input[0].input(str(make_folder(tmp_path / "xrays")))
    app.number_input[0].set_value(32)
    import_button(app).click()
    app.run()
    # Gallery captions wrap between the parts of a file name, never inside one (a zero-width space after
    # each separator), and show the name without its folder.
    app.session_state["data_tab"] = "Sample images"
    app.run()
    captions = [image.caption for element in app.get("image") for image in element.proto.imgs]
    assert captions and all("/" not in caption for caption in captions)
    assert all(caption.replace("\u200b", "").startswith("train-") for caption in captions)
    assert all(caption.count("\u200b") == 3 for caption in captions)  # train-|NORMAL-|0.|png

    # The session's one TrainingConfig (kept by the Train page) is the preview's starting point.
    from cxr.config import PRESETS

    app.session_state["training_config"] = PRESETS["fast"].replace(rotation_degrees=10.0, horizontal_flip=False,
                                                                   brightness=0.25)
    app.session_state["data_tab"] = "Augmentation preview"
    app.run()
    assert not app.exception
    assert not app.error, [error.value for error in app.error]
    assert widget(app, "slider", "Rotation (± degrees)").value == 10.0
    assert widget(app, "toggle", "Horizontal flip").value is False
    # Brightness and contrast, as on the Train page.
    assert widget(app, "slider", "Brightness (± fraction of white)").value == 0.25
    assert widget(app, "slider", "Contrast (± fraction)").value == 0.3
    images = app.get("image")
    assert len(images) == 1
    # One st.image call with the original and its augmentations.
    assert len(images[0].proto.imgs) == 7
    assert images[0].proto.imgs[0].caption == "original"

    # The image is chosen by its file name and class, not by a number.
    chooser = widget(app, "selectbox", "Image from train")
    assert chooser.options[0] == "train-NORMAL-0.png (normal)"
    assert chooser.options[-1].startswith("train-PNEUMONIA-") and chooser.options[-1].endswith(" (pneumonia)")
    chooser.set_value(len(chooser.options) - 1)
    app.run()
    assert not app.error, [error.value for error in app.error]

    # Strengths tried here can be kept for training: the Train page then starts from them.
    assert button(app, "Use these augmentation settings for training").disabled  # nothing changed yet
    widget(app, "slider", "Contrast (± fraction)").set_value(0.5)
    app.run()
    button(app, "Use these augmentation settings for training").click()
    app.run()
    assert app.session_state["training_config"].contrast == 0.5
    assert app.session_state["training_config"].rotation_degrees == 10.0
    app.switch_page("pages/train.py")
    app.run()
    assert not app.exception
    assert widget(app, "slider", "Contrast (± fraction)").value == 0.5
    assert widget(app, "slider", "Rotation (± degrees)").value == 10.0


def test_augment_examples_uses_the_training_augmentation(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    import app_components as ui
    from cxr.config import TrainingConfig

    image = np.zeros((32, 32), np.uint8)
    image[:, :8] = 255  # a bright band on the left: any flip, shift or rotation moves it
    none = TrainingConfig(image_size=32, rotation_degrees=0.0, zoom=0.0, width_shift=0.0, height_shift=0.0,
                          horizontal_flip=False)
    unchanged = ui.augment_examples(image, none, count=2, seed=0)
    assert len(unchanged) == 2 and all(np.array_equal(one, image) for one in unchanged)
    moved = ui.augment_examples(image, none.replace(rotation_degrees=45.0, width_shift=0.3), count=4, seed=3)
    assert all(one.shape == (32, 32) and one.dtype == np.uint8 for one in moved)
    assert any(not np.array_equal(one, image) for one in moved)
