"""Training (cxr/training.py) on tiny synthetic data: run directory, stop/resume, determinism, data."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
from helpers_training import synthetic_dataset, tiny_config

from cxr import pipeline, runs, training
from cxr.datasets import Dataset, load_dataset
from cxr.errors import DatasetError
from cxr.thresholds import choose_threshold


def _train(dataset, config, **kwargs):
    run_dir = runs.new_run(dataset, config)
    result = training.train(dataset, config, run_dir, verbose=0, **kwargs)
    return run_dir, result


def test_run_directory_is_complete_and_valid():
    dataset = synthetic_dataset()
    config = tiny_config(epochs=2, schedule="plateau")
    run_dir, result = _train(dataset, config)
    assert result.state == "finished" and result.epochs_done == 2
    status = runs.read_status(run_dir)
    assert status["state"] == "finished" and status["epoch"] == 2 and status["epochs"] == 2
    assert status["batches"] == status["batch"] > 0 and status["pid"] is not None
    history = runs.read_history(run_dir)
    assert history["epoch"].tolist() == [1, 2]
    assert history[list(runs.HISTORY_COLUMNS)].notna().all().all()
    assert history["learning_rate"].tolist() == pytest.approx([config.learning_rate] * 2)
    assert (history["seconds"] > 0).all()
    assert runs.read_checkpoint_info(run_dir)["epoch"] == 2
    assert runs.read_checkpoint_info(run_dir)["plateau"] is not None
    assert runs.read_config(run_dir)["training"] == config.to_dict()
    metrics = runs.read_metrics(run_dir)
    # 48 train images less 12 (0.25) for validation; the 16 test images. The threshold is Youden's on the
    # calibrated validation scores that predictions.csv holds.
    assert (metrics["validation"]["n"], metrics["test"]["n"]) == (12, 16)
    predictions = pd.read_csv(run_dir / "predictions.csv")
    validation = predictions[predictions["split"] == "val"]
    assert metrics["threshold"] == pytest.approx(
        choose_threshold(validation["y_true"], validation["y_score"], "youden"))
    model = keras.models.load_model(run_dir / runs.MODEL_FILE, safe_mode=True)
    images = dataset.images("test")[:3, ..., None]  # raw uint8 in
    assert model.predict(images, verbose=0).shape == (3, 1)
    if training.tensorboard_available():
        assert any((run_dir / runs.TENSORBOARD_DIR).rglob("events.out.tfevents.*"))
    # The population detector: fitted on train at the model's input size, described in the model card.
    from cxr import lite0

    population = json.loads((run_dir / "population.json").read_text())
    too_few = "too few images" if lite0.available() else "not installed"  # a tiny set: skipped, and why
    assert too_few in population["skipped"] and not (run_dir / "population.npz").exists()
    assert "No population detector was fitted: " in (run_dir / "model_card.md").read_text()
    # Nothing half-written is left behind.
    assert not list(run_dir.glob(".*tmp*"))


class StopAt(keras.callbacks.Callback):
    """Request a stop (the file cxr.jobs.stop writes) at a given epoch and batch."""

    def __init__(self, run_dir, epoch, batch):
        super().__init__()
        self.run_dir, self.epoch, self.batch, self.current = run_dir, epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            runs.request_stop(self.run_dir)


class CaptureStart(keras.callbacks.Callback):
    """Copies the model's weights and its optimizer's variables when fit begins (before any step)."""

    def on_train_begin(self, logs=None):
        self.weights = [np.array(value) for value in self.model.get_weights()]
        self.optimizer = {variable.path: variable.numpy() for variable in self.model.optimizer.variables}


def test_stop_mid_epoch_then_resume_continues_history_without_gaps_or_repeats():
    dataset = synthetic_dataset()
    config = tiny_config(epochs=3)
    run_dir = runs.new_run(dataset, config)
    first = CaptureStart()
    # Keras epoch 1 is the second epoch: stop after its second batch.
    result = training.train(dataset, config, run_dir, verbose=0, extra_callbacks=(first, StopAt(run_dir, 1, 1)))
    assert result.state == "stopped"
    status = runs.read_status(run_dir)
    assert status["state"] == "stopped" and "resume" in status["message"]
    assert runs.read_history(run_dir)["epoch"].tolist() == [1]
    assert runs.read_checkpoint_info(run_dir)["epoch"] == 1
    assert not (run_dir / runs.MODEL_FILE).exists()
    first_row = runs.read_history(run_dir).iloc[0].to_dict()
    checkpoint = keras.models.load_model(run_dir / runs.CHECKPOINT_FILE, safe_mode=True)
    saved_weights = [np.array(value) for value in checkpoint.get_weights()]
    saved_optimizer = {variable.path: variable.numpy() for variable in checkpoint.optimizer.variables}
    assert int(checkpoint.optimizer.iterations) == 5  # one epoch: 36 training images (12 held out) in batches of 8
    assert any(not np.array_equal(a, b) for a, b in zip(first.weights, saved_weights, strict=True))  # trained

    resumed = CaptureStart()
    result = training.train(dataset, config, run_dir, resume=True, verbose=0, extra_callbacks=(resumed,))
    assert result.state == "finished"
    # Resume continues from the checkpoint's weights and optimizer state (step count, Adam moments,
    # learning rate), not from a fresh model that would also run each remaining epoch once.
    for got, saved in zip(resumed.weights, saved_weights, strict=True):
        np.testing.assert_array_equal(got, saved)
    assert set(resumed.optimizer) == set(saved_optimizer)
    moments = [path for path in saved_optimizer if "momentum" in path or "velocity" in path]
    assert moments and all(np.any(saved_optimizer[path] != 0) for path in moments)  # Adam has moved
    for path, saved in saved_optimizer.items():
        np.testing.assert_array_equal(resumed.optimizer[path], saved, err_msg=path)
    history = runs.read_history(run_dir)
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history.iloc[0].to_dict() == pytest.approx(first_row)  # the finished epoch is kept as it was
    assert runs.read_status(run_dir)["state"] == "finished"
    assert not runs.stop_requested(run_dir)


def test_resume_drops_a_history_row_whose_checkpoint_was_never_saved():
    dataset = synthetic_dataset()
    config = tiny_config(epochs=2)
    run_dir = runs.new_run(dataset, config)
    training.train(dataset, config.replace(epochs=1), run_dir, verbose=0)
    # As if killed between writing epoch 2's row and its checkpoint.
    runs.append_history_row(run_dir, {"epoch": 2, "loss": 9.0})
    training.train(dataset, config, run_dir, resume=True, verbose=0)
    history = runs.read_history(run_dir)
    assert history["epoch"].tolist() == [1, 2] and history["loss"].iloc[1] != 9.0


def test_same_seed_gives_identical_training_and_another_seed_does_not():
    dataset = synthetic_dataset(train=32)
    config = tiny_config(epochs=1)
    first_dir, _ = _train(dataset, config)
    second_dir, _ = _train(dataset, config)
    other_dir, _ = _train(dataset, config.replace(seed=8))
    first, second, other = (runs.read_history(path) for path in (first_dir, second_dir, other_dir))
    columns = ["loss", "accuracy", "val_loss"]
    np.testing.assert_array_equal(first[columns].to_numpy(), second[columns].to_numpy())
    assert not np.array_equal(first[columns].to_numpy(), other[columns].to_numpy())
    weights = [keras.models.load_model(path / runs.MODEL_FILE).get_weights() for path in (first_dir, second_dir)]
    for left, right in zip(*weights, strict=True):
        np.testing.assert_array_equal(left, right)


def test_cosine_schedule_lowers_the_learning_rate_and_early_stopping_keeps_best():
    dataset = synthetic_dataset(train=32)
    config = tiny_config(epochs=3, schedule="cosine", early_stopping=True, early_stopping_patience=1)
    run_dir, result = _train(dataset, config)
    history = runs.read_history(run_dir)
    assert history["learning_rate"].iloc[0] == pytest.approx(config.learning_rate)
    assert history["learning_rate"].is_monotonic_decreasing and history["learning_rate"].iloc[-1] < 3e-3
    info = runs.read_checkpoint_info(run_dir)
    assert info["best_epoch"] == int(history["val_auc"].idxmax()) + 1
    assert (run_dir / runs.BEST_WEIGHTS_FILE).exists()


def test_augmentation_layers_follow_the_settings():
    assert pipeline.build_augmentation(tiny_config(rotation_degrees=0, zoom=0, width_shift=0, height_shift=0,
                                                   horizontal_flip=False)) is None
    augmentation = pipeline.build_augmentation(tiny_config(zoom=0, width_shift=0, height_shift=0,
                                                           horizontal_flip=False))
    assert [type(layer).__name__ for layer in augmentation.layers] == ["RandomRotation"]
    assert augmentation.layers[0].factor == pytest.approx((-30 / 360, 30 / 360))
    full = pipeline.build_augmentation(tiny_config())
    assert [type(layer).__name__ for layer in full.layers] == ["RandomRotation", "RandomZoom",
                                                             "RandomTranslation", "RandomFlip"]
    full.build((None, 32, 32, 1))
    assert full.count_params() == 0  # no weights: the seed model keeps its exact parameter count


def test_tf_data_pipeline_keeps_uint8_until_augmentation_and_weights_classes():
    images = np.zeros((10, 32, 32), np.uint8)
    labels = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    weights = pipeline.class_weights(labels, "balanced")
    assert weights == pytest.approx({0: 10 / 2, 1: 10 / 18})
    assert pipeline.class_weights(labels, "none") is None
    plain = pipeline.make_dataset(images, labels, batch_size=4, training=False)
    batch_images, batch_labels = next(iter(plain))
    assert batch_images.dtype.name == "uint8" and tuple(batch_images.shape) == (4, 32, 32, 1)
    assert batch_labels.shape == (4, 1)
    augmented = pipeline.make_dataset(images, labels, batch_size=4, training=True, seed=1, weights=weights,
                                      augmentation=pipeline.build_augmentation(tiny_config()), max_batches=2)
    batches = list(augmented)
    assert len(batches) == 2
    batch_images, batch_labels, batch_weights = batches[0]
    assert batch_images.dtype.name == "float32" and tuple(batch_images.shape) == (4, 32, 32, 1)
    expected = np.where(batch_labels.numpy().reshape(-1) == 0, 5.0, 10 / 18)
    np.testing.assert_allclose(batch_weights.numpy(), expected, rtol=1e-6)


def test_validation_carved_in_training_is_stratified_and_keeps_patients_together():
    # An in-memory data set without "val": training carves it with the import's splitter.
    images = np.arange(60, dtype=np.uint8)[:, None, None] * np.ones((1, 32, 32), np.uint8)  # image i is all i
    labels = np.array([0] * 20 + [1] * 40)
    patients = np.repeat(np.arange(30), 2)  # two images per patient
    dataset = Dataset.from_arrays("pairs", {"train": (images, labels)}, patient_ids={"train": patients})
    arrays = pipeline.training_arrays(dataset, tiny_config(validation_fraction=0.25))
    train_index, validation_index = arrays["train"][0][:, 0, 0], arrays["val"][0][:, 0, 0]
    assert len(train_index) + len(validation_index) == 60
    assert set(patients[train_index]).isdisjoint(patients[validation_index])
    # Per class, whole patients of two images until 0.25 of the images: ceil(5 / 2) = 3 patients of class 0,
    # 10 / 2 = 5 of class 1.
    assert np.bincount(labels[validation_index]).tolist() == [6, 10]
    one_normal = Dataset.from_arrays("few", {"train": (images[:4], np.array([0, 1, 1, 1]))})
    with pytest.raises(DatasetError, match="Class normal"):
        pipeline.training_arrays(one_normal, tiny_config())


def test_image_size_mismatch_is_a_clear_error():
    with pytest.raises(DatasetError, match="image_size=64"):
        pipeline.training_arrays(synthetic_dataset(), tiny_config(image_size=64))


def test_dataset_own_val_split_is_used():
    dataset = synthetic_dataset(train=24, val=10)
    arrays = pipeline.training_arrays(dataset, tiny_config())
    assert len(arrays["train"][0]) == 24 and len(arrays["val"][0]) == 10


def test_npz_dataset_round_trip(tmp_path):
    from helpers_training import write_npz

    dataset = load_dataset(write_npz(tmp_path / "tiny.npz"))
    assert isinstance(dataset, Dataset)  # the same type as an imported data set, not a parallel class
    assert dataset.name == "tiny" and dataset.image_size == 32 and dataset.splits == ("train", "test")
    assert dataset.images("train").dtype == np.uint8
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="bad.npz"):
        load_dataset(tmp_path / "bad.npz")


def test_failed_training_marks_the_run_failed():
    dataset = synthetic_dataset()
    config = tiny_config()
    run_dir = runs.new_run(dataset, config)
    with pytest.raises(DatasetError):
        training.train(dataset, config.replace(image_size=48), run_dir, verbose=0)
    status = json.loads((run_dir / runs.STATUS_FILE).read_text())
    assert status["state"] == "failed" and "48" in status["error"]
