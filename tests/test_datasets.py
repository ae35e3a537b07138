"""Data layer: every source layout, the cache, the patient-grouped split, duplicates, bad input."""

from __future__ import annotations

import io
import shutil
import stat
import zipfile

import numpy as np
import pandas as pd
import pytest
from helpers_data import synthetic_xray, write_folder_dataset

from cxr import datasets
from cxr.cli import main as cli_main
from cxr.config import DataConfig
from cxr.datasets import class_counts, import_dataset, list_datasets, load_dataset
from cxr.errors import DatasetError
from cxr.sources import patient_id
from cxr.splits import assign_splits, leakage_report

SMALL = DataConfig(image_size=32)


def encode_png(image: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".png", image)[1].tobytes()


# ---------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("file_name, expected", [
    ("person12_virus_3.jpeg", "person12"),
    ("train/PNEUMONIA/person1000_bacteria_2931.jpeg", "person1000"),
    ("IM-0115-0001.jpeg", "im-0115"),
    ("NORMAL2-IM-0927-0001.jpeg", "normal2-im-0927"),
    ("scan_7.png", "scan_7"),
])
def test_patient_id_from_kermany_file_names(file_name, expected):
    assert patient_id(file_name) == expected


# ---------------------------------------------------------------------------------------------- layouts
def test_tutorial_folder_layout_imports_with_grouped_validation(folder_dataset):
    report = import_dataset(folder_dataset, name="tiny", config=SMALL)
    assert report.num_files == 48 and report.num_images == 48 and not report.skipped
    dataset = load_dataset("tiny")
    assert dataset.splits == ("train", "val", "test")
    for split in dataset.splits:
        images, labels = dataset.images(split), dataset.labels(split)
        assert images.dtype == np.uint8 and images.shape[1:] == (32, 32)
        assert labels.dtype == np.int64 and len(labels) == len(images)
        assert set(labels.tolist()) == {0, 1}, f"{split} must hold both classes"
    assert len(dataset.labels("test")) == 24  # the source's test split is kept whole
    assert len(dataset.labels("train")) + len(dataset.labels("val")) == 24
    leakage = leakage_report(dataset)
    assert all(count == 0 for count in leakage["shared_patients"].values())
    assert all(count == 0 for count in leakage["shared_images"].values())


def test_images_in_cache_match_a_direct_decode(folder_dataset):
    from cxr.imaging import load_image

    import_dataset(folder_dataset, name="tiny", config=SMALL)
    dataset = load_dataset("tiny")
    row = dataset.manifest[dataset.manifest["split"] == "test"].iloc[3]
    position = int((dataset.manifest["split"] == "test").to_numpy()[: row.name].sum())
    expected, _ = load_image(folder_dataset / row["file"], 32)
    np.testing.assert_array_equal(dataset.images("test")[position], expected)
    assert dataset.labels("test")[position] == row["label"]


def test_kaggle_layout_with_nested_copy_junk_and_val_folded(tmp_path):
    root = tmp_path / "archive"
    write_folder_dataset(root / "chest_xray", splits=("train", "test", "val"), per_class=8,
                         class_names=("NORMAL", "PNEUMONIA"), suffix=".jpeg")
    shutil.copytree(root / "chest_xray" / "train", root / "chest_xray" / "chest_xray" / "train")
    junk = root / "__MACOSX" / "chest_xray" / "train" / "NORMAL"
    junk.mkdir(parents=True)
    (junk / "._IM-0001-0001.jpeg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (root / "chest_xray" / "train" / "NORMAL" / ".DS_Store").write_bytes(b"junk")

    report = import_dataset(root, name="kaggle", config=SMALL)
    assert report.layout == "splits"
    assert report.num_files == 48  # 3 splits x 2 classes x 8; the nested copy and junk are not counted
    assert any("another copy" in line for line in report.ignored)
    assert not report.skipped
    dataset = load_dataset("kaggle")
    assert set(dataset.manifest["split"]) == {"train", "val", "test"}
    val_files = dataset.manifest.loc[dataset.manifest["split"] != "test", "file"]
    assert any("/val/" in file for file in val_files)  # the source's val images are in the pool
    assert (dataset.manifest["split"] == "test").sum() == 16


def test_zip_source_matches_folder_source(tmp_path, folder_dataset):
    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for file in sorted(folder_dataset.rglob("*.png")):
            handle.write(file, "chest_xray/" + file.relative_to(folder_dataset).as_posix())
        handle.writestr("__MACOSX/chest_xray/._x.png", b"junk")
    from_zip = import_dataset(archive, name="zipped", config=SMALL)
    from_folder = import_dataset(folder_dataset, name="folder", config=SMALL)
    assert from_zip.counts == from_folder.counts
    np.testing.assert_array_equal(load_dataset("zipped").images("test"), load_dataset("folder").images("test"))


@pytest.mark.parametrize("entry, message", [
    ("../evil/normal/a.png", "outside its folder"),
    ("train/../../normal/a.png", "outside its folder"),
    ("/etc/normal/a.png", "absolute path"),
])
def test_zip_with_unsafe_entries_is_refused(tmp_path, entry, message):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("train/normal/ok.png", encode_png(synthetic_xray(0)))
        handle.writestr(zipfile.ZipInfo(entry), encode_png(synthetic_xray(1)))
    with pytest.raises(DatasetError, match=message):
        import_dataset(archive, config=SMALL)
    assert list_datasets() == []


def test_zip_with_symlink_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        link = zipfile.ZipInfo("train/normal/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        handle.writestr(link, "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link"):
        import_dataset(archive, config=SMALL)


def test_zip_bomb_is_refused_before_extraction(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("train/normal/a.png", b"\x00" * 20_000_000)  # 20 MB of zeros → ~20 KB compressed
        handle.writestr("train/pneumonia/b.png", b"\x00" * 20_000_000)
    assert archive.stat().st_size < 200_000
    with pytest.raises(DatasetError, match="zip bomb"):
        import_dataset(archive, config=DataConfig(image_size=32, max_zip_bytes=10_000_000))
    assert list_datasets() == []


def test_npz_medmnist_layout(tmp_path):
    def split(count: int, seed: int):
        labels = np.array([index % 2 for index in range(count)], dtype=np.uint8).reshape(-1, 1)  # MedMNIST shape
        images = np.stack([synthetic_xray(int(label), 28, seed + index) for index, label in enumerate(labels[:, 0])])
        return images, labels

    arrays = {}
    for prefix, count in (("train", 40), ("val", 10), ("test", 12)):
        seed = {"train": 0, "val": 100, "test": 200}[prefix]
        arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"] = split(count, seed)
    path = tmp_path / "pneumoniamnist.npz"
    np.savez(path, **arrays)
    report = import_dataset(path, config=DataConfig(image_size=32))
    assert report.name == "pneumoniamnist-32"
    dataset = load_dataset("pneumoniamnist-32")
    assert len(dataset.labels("test")) == 12
    assert len(dataset.labels("train")) + len(dataset.labels("val")) == 50
    assert dataset.images("train").shape[1:] == (32, 32)


def test_npz_that_needs_pickle_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, train_images=np.array([object(), object()], dtype=object), train_labels=np.array([0, 1]))
    with pytest.raises(DatasetError, match="pickle"):
        import_dataset(path, config=SMALL)


def test_npz_that_is_not_a_zip_is_named_as_such_by_import_and_by_training(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip archive")
    # One reader for both paths; the message must not blame pickled object arrays.
    for read in (lambda: import_dataset(path, config=SMALL), lambda: load_dataset(path)):
        with pytest.raises(DatasetError, match="junk.npz is not a readable .npz file"):
            read()


def test_class_folders_only_get_test_and_validation_splits(tmp_path):
    root = write_folder_dataset(tmp_path / "flat", splits=(None,), per_class=30)
    report = import_dataset(root, name="flat", config=SMALL)
    assert report.layout == "classes"
    dataset = load_dataset("flat")
    counts = dataset.class_counts()
    assert set(counts["split"]) == {"train", "val", "test"}
    assert (counts["count"] > 0).all()
    assert counts.loc[counts["split"] == "test", "count"].sum() == pytest.approx(60 * 0.15, abs=3)
    leakage = leakage_report(dataset)
    assert all(count == 0 for count in leakage["shared_patients"].values())


# ---------------------------------------------------------------------------------------------- splitting
def test_split_groups_patients_and_stratifies_classes():
    rows = []
    for patient in range(60):
        label = int(patient < 15)  # 25 % of patients with pneumonia, 1-4 images each
        for _image in range(1 + patient % 4):
            rows.append({"label": label, "patient_id": f"p{patient}", "split": "train"})
    manifest = pd.DataFrame(rows)
    split = assign_splits(manifest, validation_fraction=0.2, test_fraction=0.15, seed=3, make_test=False)
    assert set(split) == {"train", "val"}
    by_patient = pd.DataFrame({"patient": manifest["patient_id"], "split": split}).groupby("patient")["split"].nunique()
    assert (by_patient == 1).all(), "a patient must never be in two splits"
    for label in (0, 1):
        share = (split[manifest["label"] == label] == "val").mean()
        assert 0.1 <= share <= 0.35, f"class {label}: {share:.2f} of images in validation, wanted about 0.2"
    again = assign_splits(manifest, validation_fraction=0.2, test_fraction=0.15, seed=3, make_test=False)
    assert again.equals(split), "the same seed must give the same split"


def test_patients_of_test_are_removed_from_train(tmp_path):
    root = write_folder_dataset(tmp_path / "d", per_class=10)
    # The same patient (person7) in train and in test: its train images must go.
    assert any(patient_id(file.name) == "person1007" for file in (root / "test" / "pneumonia").iterdir())
    (root / "train" / "pneumonia" / "person1007_virus_999.png").write_bytes(
        encode_png(synthetic_xray(1, 48, seed=999)))
    report = import_dataset(root, name="d", config=SMALL)
    assert report.overlap_removed == ["train/pneumonia/person1007_virus_999.png"]
    dataset = load_dataset("d")
    test_patients = set(dataset.manifest.loc[dataset.manifest["split"] == "test", "patient_id"])
    other = set(dataset.manifest.loc[dataset.manifest["split"] != "test", "patient_id"])
    assert not test_patients & other

    kept = import_dataset(root, name="kept", config=DataConfig(image_size=32, drop_test_patients_from_train=False))
    assert kept.overlap_removed == [] and kept.num_images == report.num_images + len(report.overlap_removed)


def test_duplicates_are_reported_and_never_cross_splits(tmp_path):
    root = write_folder_dataset(tmp_path / "dup", per_class=10)
    train_normal = sorted((root / "train" / "normal").iterdir())
    shutil.copy(train_normal[0], root / "train" / "normal" / "IM-0500-0001.png")  # duplicate inside train
    test_file = sorted((root / "test" / "pneumonia").iterdir())[0]
    shutil.copy(test_file, root / "train" / "pneumonia" / "person600_virus_1.png")  # train copy of a test image
    report = import_dataset(root, name="dup", config=SMALL)
    assert len(report.duplicate_groups) == 2
    assert sorted(report.duplicates_removed) == ["train/normal/IM-0500-0001.png",
                                                 "train/pneumonia/person600_virus_1.png"]
    dataset = load_dataset("dup")
    hashes = dataset.manifest.groupby("sha256")["split"].nunique()
    assert (hashes == 1).all()
    assert not dataset.manifest.duplicated("sha256").any()


# ---------------------------------------------------------------------------------------------- bad input
def test_one_unreadable_file_is_skipped_and_listed(folder_dataset):
    (folder_dataset / "train" / "normal" / "IM-0900-0001.png").write_bytes(b"this is not a PNG")
    (folder_dataset / "train" / "pneumonia" / "person900_virus_1.jpeg").write_bytes(b"")
    report = import_dataset(folder_dataset, name="tiny", config=SMALL)
    assert report.num_images == 48
    skipped = {item["file"]: item["reason"] for item in report.skipped}
    assert set(skipped) == {"train/normal/IM-0900-0001.png", "train/pneumonia/person900_virus_1.jpeg"}
    assert all(reason for reason in skipped.values())
    assert "unreadable" in report.summary()


@pytest.mark.parametrize("make, message", [
    (lambda root: write_folder_dataset(root, per_class=3, class_names=("normal",)), "both classes"),
    (lambda root: root.mkdir(), "No chest X-ray images"),
    (lambda root: write_folder_dataset(root, per_class=3, class_names=("normal", "other")), "both classes"),
])
def test_missing_class_or_empty_folder_is_a_clear_error(tmp_path, make, message):
    root = tmp_path / "bad"
    make(root)
    with pytest.raises(DatasetError, match=message) as caught:
        import_dataset(root, config=SMALL)
    assert "Accepted layouts" in str(caught.value)


def test_data_set_with_one_image_is_refused(tmp_path):
    root = tmp_path / "one" / "train" / "normal"
    root.mkdir(parents=True)
    (root / "IM-0001-0001.png").write_bytes(encode_png(synthetic_xray(0)))
    with pytest.raises(DatasetError, match="1 image"):
        import_dataset(tmp_path / "one", config=SMALL)


def test_missing_source_and_unknown_name(tmp_path):
    with pytest.raises(DatasetError, match="No file or folder"):
        import_dataset(tmp_path / "nowhere", config=SMALL)
    with pytest.raises(DatasetError, match="No imported data set named 'ghost'"):
        load_dataset("ghost")
    with pytest.raises(DatasetError, match="not allowed"):
        import_dataset(tmp_path, name="../escape", config=SMALL)


def test_folder_of_only_non_images_is_a_clear_error(tmp_path):
    root = tmp_path / "texts" / "train"
    for class_name in ("normal", "pneumonia"):
        (root / class_name).mkdir(parents=True)
        for index in range(300):
            (root / class_name / f"notes{index}.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="No chest X-ray images"):
        import_dataset(tmp_path / "texts", config=SMALL)


# ---------------------------------------------------------------------------------------------- cache
def test_second_import_reads_only_the_cache(folder_dataset, monkeypatch):
    import_dataset(folder_dataset, name="tiny", config=SMALL)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the second import must not decode images")

    monkeypatch.setattr("cxr.imaging.load_image", no_decoding)
    again = import_dataset(folder_dataset, name="tiny", config=SMALL)
    assert again.from_cache and again.num_images == 48
    # A changed setting is a different cache: it must decode again.
    with pytest.raises(AssertionError, match="must not decode"):
        import_dataset(folder_dataset, name="tiny", config=DataConfig(image_size=40))


@pytest.mark.parametrize("damage", ["truncate", "edit"])
def test_damaged_cache_is_detected_and_reimported(folder_dataset, damage):
    import_dataset(folder_dataset, name="tiny", config=SMALL)
    expected = load_dataset("tiny").images("train").copy()
    cache_file = load_dataset("tiny").path / "train_images.npy"
    data = bytearray(cache_file.read_bytes())
    if damage == "truncate":
        cache_file.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[-10] ^= 0xFF
        cache_file.write_bytes(bytes(data))
    repaired = load_dataset("tiny")  # source still there: imported again, never half-read
    np.testing.assert_array_equal(repaired.images("train"), expected)


def test_damaged_cache_without_source_is_a_clear_error(tmp_path):
    root = write_folder_dataset(tmp_path / "gone", per_class=6)
    import_dataset(root, name="gone", config=SMALL)
    shutil.rmtree(root)
    cache_file = load_dataset("gone", verify=False).path / "test_labels.npy"
    cache_file.write_bytes(cache_file.read_bytes()[:-3])
    with pytest.raises(DatasetError, match="damaged"):
        load_dataset("gone")


def test_class_counts_dataframe():
    manifest = pd.DataFrame({"split": ["train"] * 4 + ["test"] * 2, "label": [0, 1, 1, 1, 0, 1]})
    counts = class_counts(manifest)
    assert counts.to_dict(orient="records") == [
        {"split": "train", "class": "normal", "count": 1, "percent": 25.0},
        {"split": "train", "class": "pneumonia", "count": 3, "percent": 75.0},
        {"split": "test", "class": "normal", "count": 1, "percent": 50.0},
        {"split": "test", "class": "pneumonia", "count": 1, "percent": 50.0},
    ]


def test_upload_of_a_zip(folder_dataset):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as handle:
        for file in sorted(folder_dataset.rglob("*.png")):
            handle.write(file, file.relative_to(folder_dataset).as_posix())
    report = datasets.read_upload(buffer.getvalue(), "my data.zip", config=SMALL)
    assert report.name == "my-data-32" and report.num_images == 48
    with pytest.raises(DatasetError, match="not a .zip or .npz"):
        datasets.read_upload(b"hello", "notes.txt", config=SMALL)


# ---------------------------------------------------------------------------------------------- command line
def test_command_line_import_and_info(folder_dataset, capsys):
    assert cli_main(["data", "import", str(folder_dataset), "--size", "32", "--name", "cli"]) == 0
    output = capsys.readouterr()
    assert "48 images kept of 48 found" in output.out
    assert "decoding" in output.err  # the progress bar
    assert cli_main(["data", "info", "cli"]) == 0
    info = capsys.readouterr().out
    assert "pneumonia" in info and "Patients shared between splits: {'train/val': 0" in info
    assert cli_main(["data", "list"]) == 0
    assert "cli" in capsys.readouterr().out


def test_command_line_bad_input_is_one_line_not_a_traceback(tmp_path, capsys):
    assert cli_main(["data", "import", str(tmp_path / "missing")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: No file or folder") and "Traceback" not in error
    assert cli_main(["data", "import", str(tmp_path), "--size", "4096"]) == 2
    assert "image_size must be an integer from 32 to 512; received 4096" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- real data
def test_real_full_size_originals_import(shared_data, tmp_path):
    originals = shared_data / "originals"
    if not originals.is_dir():
        pytest.skip("originals/ not present")
    report = import_dataset(originals, name="originals", config=DataConfig(image_size=64, validation_fraction=0.2))
    assert report.layout == "classes" and report.num_files == 24 and not report.skipped
    dataset = load_dataset("originals")
    widths = dataset.manifest["width"]
    assert widths.max() > 1000 and widths.min() >= 300  # full-size originals, 400-2900 px


@pytest.mark.slow
def test_real_kermany_import(shared_data):
    report = import_dataset(shared_data / "chest_xray", name="kermany", config=DataConfig(image_size=64))
    assert report.num_files == 5840 and not report.skipped
    assert len(report.duplicate_groups) == 30 and sum(map(len, report.duplicate_groups)) == 62
    dataset = load_dataset("kermany")
    assert len(dataset.labels("test")) == 624
    leakage = leakage_report(dataset)
    assert all(count == 0 for count in leakage["shared_patients"].values())
    assert all(count == 0 for count in leakage["shared_images"].values())
    reloaded = load_dataset("kermany")
    assert reloaded.images("train").shape[1:] == (64, 64)
    assert report.counts == reloaded.report.counts


# ---------------------------------------------------------------------------------------------- server folders
def test_server_folder_guard(tmp_path, monkeypatch, folder_dataset):
    from cxr.datasets import check_server_folder

    monkeypatch.delenv("CXR_DATA_ROOTS", raising=False)
    assert check_server_folder(folder_dataset) == folder_dataset.resolve()
    for system_folder in ("/", "/etc", "/proc/self"):
        with pytest.raises(DatasetError, match="system folder"):
            check_server_folder(system_folder)
    monkeypatch.setenv("CXR_DATA_ROOTS", f"{tmp_path / 'allowed'}:{folder_dataset.parent}")
    assert check_server_folder(folder_dataset) == folder_dataset.resolve()
    with pytest.raises(DatasetError, match="outside the folders this server allows"):
        check_server_folder(tmp_path.parent)
    with pytest.raises(DatasetError, match="outside the folders"):
        check_server_folder(folder_dataset.parent / ".." / "elsewhere")


def test_an_import_is_reported_and_listed_as_typed_frozen_records(tmp_path):
    import dataclasses

    from cxr.dataset_records import DatasetEntry, ImportReport

    report = import_dataset(write_folder_dataset(tmp_path / "flat", splits=(None,), per_class=30), name="flat",
                            config=SMALL)
    stored = load_dataset("flat").report  # read back from dataset.json
    assert isinstance(stored, ImportReport) and stored == report
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.num_images = 0
    (entry,) = list_datasets()
    assert isinstance(entry, DatasetEntry) and entry.name == "flat" and entry.image_size == 32
    assert entry.split_size("train") == sum(report.counts["train"].values()) > 0
    assert entry.split_size("missing") == 0
    assert sum(entry.split_size(split) for split in entry.counts) == report.num_images == 60
