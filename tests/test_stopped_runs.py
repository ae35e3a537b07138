"""Stopped and interrupted runs made usable (cxr/stopped_runs.py): evaluated from their best finished epoch,
with a model card, loadable by the Predictor, in plain words, and refused when there is nothing to evaluate."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers_training import synthetic_dataset, tiny_config
from test_training import StopAt

from cxr import runs, stopped_runs, training
from cxr.atomic import atomic_write_json
from cxr.errors import RunError
from cxr.predict import Predictor
from cxr.run_text import progress, state_text


def stopped_run(dataset, *, stop_epoch: int = 2, epochs: int = 5, **settings):
    """A run stopped by its user in the middle of epoch ``stop_epoch + 1`` (so ``stop_epoch`` finished)."""
    config = tiny_config(epochs=epochs, **settings)
    run_dir = runs.new_run(dataset, config)
    result = training.train(dataset, config, run_dir, verbose=0,
                            extra_callbacks=(StopAt(run_dir, stop_epoch, 1),))
    assert result.state == "stopped"
    return run_dir


def test_a_stopped_run_is_finalized_from_its_best_epoch_and_becomes_usable():
    dataset = synthetic_dataset()
    run_dir = stopped_run(dataset)
    status = runs.read_status(run_dir)
    # Plain words, and the progress stands at the finished epochs, not mid-epoch where the stop came.
    assert status["message"].startswith("Stopped by you after epoch 2 of 5")
    assert status["stop_reason"] == "user"
    fraction, text = progress(status, stopped_runs.finished_epochs(run_dir))
    assert fraction == pytest.approx(2 / 5) and text == "2 of 5 epochs finished"
    assert state_text(status, 2) == "Stopped by you after epoch 2 of 5"
    assert not stopped_runs.has_usable_model(run_dir)  # the bug: a stopped run could not be used at all
    assert stopped_runs.can_finalize(run_dir) == (True, "")

    metrics = stopped_runs.finalize_stopped_run(run_dir, dataset=dataset)

    assert runs.read_status(run_dir)["state"] == "stopped"  # still resumable
    assert stopped_runs.has_usable_model(run_dir) and stopped_runs.evaluation_is_current(run_dir)
    for name in ("model.keras", "metrics.json", "predictions.csv", "model_card.md", "model_card.json"):
        assert (run_dir / name).is_file(), name
    assert metrics["training_ended"]["finished_epochs"] == 2
    assert 0 <= metrics["threshold"] <= 1 and metrics["test"]["n"] == len(dataset.labels("test"))
    assert "Stopped by you after epoch 2 of 5" in (run_dir / "model_card.md").read_text()

    # The saved model holds the best epoch's weights, not the last epoch's.
    info = runs.read_checkpoint_info(run_dir)
    best = keras.models.load_model(run_dir / runs.CHECKPOINT_FILE, safe_mode=True)
    best.load_weights(str(run_dir / runs.BEST_WEIGHTS_FILE))
    saved = keras.models.load_model(run_dir / runs.MODEL_FILE, safe_mode=True)
    images = dataset.images("test")[:4, ..., None]
    np.testing.assert_allclose(saved.predict(images, verbose=0), best.predict(images, verbose=0), rtol=1e-5)
    assert runs.read_status(run_dir)["finalized_epoch"] == info["best_epoch"]
    ending = f"evaluated with the weights of epoch {info['best_epoch']}"
    assert state_text(runs.read_status(run_dir), 2).endswith(ending)

    # The Predict page's loader takes it like a finished run.
    results = Predictor.load(run_dir.name).predict([dataset.images("test")[0]], names=["one"])
    assert results[0].ok and 0.0 <= results[0].probability <= 1.0

    allowed, reason = stopped_runs.can_finalize(run_dir)
    assert not allowed and "already evaluated" in reason
    with pytest.raises(RunError, match="already evaluated"):
        stopped_runs.finalize_stopped_run(run_dir, dataset=dataset)


def test_an_interrupted_run_is_finalized_and_a_resumed_one_needs_it_again():
    dataset = synthetic_dataset()
    run_dir = stopped_run(dataset, stop_epoch=1, epochs=3, threshold_rule="fixed", fixed_threshold=0.3)
    # As a killed process leaves it: state running with a pid that is gone.
    runs.write_status(run_dir, state="running", pid=2**22 + 17, pid_created=1.0)
    assert runs.read_status(run_dir)["state"] == "interrupted"
    assert state_text(runs.read_status(run_dir), 1).startswith("Interrupted after epoch 1 of 3")
    metrics = stopped_runs.finalize_stopped_run(run_dir, dataset=dataset)
    assert stopped_runs.evaluation_is_current(run_dir)
    # The run's own threshold rule decides, as it would have at the end of training.
    assert (metrics["threshold_rule"], metrics["threshold"]) == ("fixed", pytest.approx(0.3))
    # A later epoch (as after a resume) makes the evaluation stale: it may be done again.
    runs.write_status(run_dir, state="stopped", pid=None)
    checkpoint = runs.read_checkpoint_info(run_dir)
    atomic_write_json(run_dir / runs.CHECKPOINT_INFO_FILE, dict(checkpoint, epoch=checkpoint["epoch"] + 1))
    assert not stopped_runs.evaluation_is_current(run_dir)
    assert stopped_runs.can_finalize(run_dir) == (True, "")


def test_runs_with_nothing_to_evaluate_are_refused_with_the_reason():
    dataset = synthetic_dataset()
    config = tiny_config(epochs=2)
    early = runs.new_run(dataset, config)
    # Stopped in the middle of the first epoch: no checkpoint, no model.
    training.train(dataset, config, early, verbose=0, extra_callbacks=(StopAt(early, 0, 0),))
    assert runs.read_status(early)["state"] == "stopped"
    with pytest.raises(RunError, match="before its first epoch ended"):
        stopped_runs.finalize_stopped_run(early, dataset=dataset)
    training_run = runs.new_run(dataset, config)
    runs.write_status(training_run, state="running", pid=None)
    with pytest.raises(RunError, match="only a stopped or interrupted run"):
        stopped_runs.finalize_stopped_run(training_run, dataset=dataset)


def test_the_shell_entry_point_explains_a_refusal(capsys):
    assert stopped_runs.main([]) == 2
    run_dir = runs.new_run("tiny", tiny_config())
    runs.write_status(run_dir, state="stopped")
    assert stopped_runs.main([run_dir.name]) == 1
    assert "before its first epoch ended" in capsys.readouterr().err
