"""Command-line flags are generated from TrainingConfig (one per field, earlier names kept as aliases), and the
threshold rule is a TrainingConfig field that reaches run finalisation from `cxr train` and `cxr evaluate`."""

from __future__ import annotations

import dataclasses
import json
import signal

import numpy as np
import pandas as pd
import pytest
from helpers_training import write_npz

from cxr import cli
from cxr.commands import train as train_command
from cxr.config import TrainingConfig
from cxr.run_results import write_run_results
from cxr.thresholds import choose_threshold


def parse_train(*flags: str):
    return cli.build_parser().parse_args(["train", "data", *flags])


def test_every_training_setting_has_a_flag_named_after_its_field():
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for field in dataclasses.fields(TrainingConfig):
        flag = "--" + field.name.replace("_", "-")
        assert flag in help_text, flag


@pytest.mark.parametrize("old, new, field, value", [
    ("--dropout", "--dropout-rate", "dropout_rate", 0.35),
    ("--patience", "--early-stopping-patience", "early_stopping_patience", 7),
    ("--rotation", "--rotation-degrees", "rotation_degrees", 12.0),
    ("--max-batches", "--max-batches-per-epoch", "max_batches_per_epoch", 3),
])
def test_earlier_flag_names_still_work(old, new, field, value):
    by_old = train_command.config_from_args(parse_train(old, str(value)), 32)
    by_new = train_command.config_from_args(parse_train(new, str(value)), 32)
    assert getattr(by_old, field) == getattr(by_new, field) == value
    assert by_old == by_new


def test_unset_flags_keep_the_preset_and_booleans_and_none_parse():
    config = train_command.config_from_args(parse_train("--preset", "tutorial", "--no-early-stopping",
                                                        "--seed", "none", "--threshold-rule", "sensitivity",
                                                        "--min-sensitivity", "0.9"), 48)
    tutorial = TrainingConfig(model="seed", epochs=12, optimizer="rmsprop", class_weighting="none",
                              early_stopping=False)
    assert config == tutorial.replace(image_size=48, seed=None, threshold_rule="sensitivity", min_sensitivity=0.9)


def test_threshold_settings_are_validated_fields():
    assert TrainingConfig().threshold_settings() == {"threshold_rule": "youden", "min_sensitivity": 0.95,
                                                     "fixed_threshold": 0.5}
    with pytest.raises(ValueError, match="threshold_rule must be one of youden, sensitivity, fixed; received 'f1'"):
        TrainingConfig(threshold_rule="f1")
    with pytest.raises(ValueError, match="min_sensitivity must be a number from 0.5 to 1.0; received 0.3"):
        TrainingConfig(min_sensitivity=0.3)
    assert TrainingConfig.from_dict({"model": "fast"}).threshold_rule == "youden"  # runs saved before the field


def test_bad_threshold_flag_is_one_error_line(tmp_path, capsys, cxr_home):
    before = signal.getsignal(signal.SIGTERM)
    status = cli.main(["train", str(write_npz(tmp_path / "tiny.npz")), "--min-sensitivity", "1.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: min_sensitivity must be"), err
    assert signal.getsignal(signal.SIGTERM) is before  # a refused command leaves no SIGTERM handler behind


def test_train_applies_the_sensitivity_rule_at_finalisation(tmp_path, capsys, cxr_home):
    data = write_npz(tmp_path / "tiny.npz")
    before = signal.getsignal(signal.SIGTERM)
    status = cli.main(["train", str(data), "--epochs", "1", "--batch-size", "8", "--max-batches", "2",
                       "--threshold-rule", "sensitivity", "--min-sensitivity", "0.9", "--quiet"])
    assert status == 0, capsys.readouterr().err
    # The process's own SIGTERM handler is back: a later SIGTERM (a CI time limit) must end it, not be
    # taken as a stop request for this finished training.
    assert signal.getsignal(signal.SIGTERM) is before
    (run,) = [path for path in (cxr_home / "runs").iterdir() if (path / "config.json").is_file()]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["threshold_rule"] == "sensitivity" and metrics["min_sensitivity"] == 0.9
    assert metrics["validation"]["sensitivity"]["value"] >= 0.9
    assert json.loads((run / "config.json").read_text())["training"]["threshold_rule"] == "sensitivity"


def fake_run(cxr_home, model_file) -> tuple:
    """A finished run with a real model, config.json and predictions.csv whose scores separate the classes
    imperfectly: Youden's threshold keeps fewer than 95 % of pneumonia cases."""
    run = cxr_home / "runs" / "20250101-000000-fast-rule"
    run.mkdir(parents=True)
    (run / "model.keras").write_bytes(model_file.read_bytes())
    (run / "config.json").write_text(json.dumps({"version": 1, "dataset": "nowhere",
                                                 "training": {"model": "fast", "image_size": 32}}))
    generator = np.random.default_rng(1)
    val_true, test_true = generator.integers(0, 2, 200), generator.integers(0, 2, 100)
    val_score = np.clip(0.35 + 0.3 * val_true + generator.normal(0, 0.18, 200), 0.01, 0.99)
    test_score = np.clip(0.35 + 0.3 * test_true + generator.normal(0, 0.18, 100), 0.01, 0.99)
    write_run_results(run, val_true=val_true, val_score=val_score, test_true=test_true, test_score=test_score)
    return run, val_true, val_score


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 1))
    x = layers.GlobalAveragePooling2D()(layers.Rescaling(1 / 255)(inputs))
    outputs = layers.Activation("sigmoid")(layers.Dense(1, name="logit")(x))
    path = tmp_path_factory.mktemp("model") / "model.keras"
    keras.Model(inputs, outputs).save(path)
    return path


def test_evaluate_chooses_a_runs_threshold_again_with_the_sensitivity_rule(cxr_home, model_file, capsys):
    run, val_true, _ = fake_run(cxr_home, model_file)
    youden = json.loads((run / "metrics.json").read_text())
    assert youden["threshold_rule"] == "youden" and youden["validation"]["sensitivity"]["value"] < 0.95
    status = cli.main(["evaluate", "--model", run.name, "--threshold-rule", "sensitivity", "--min-sensitivity",
                       "0.95", "--no-figures"])
    assert status == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["threshold_rule"] == "sensitivity" and metrics["min_sensitivity"] == 0.95
    assert metrics["validation"]["sensitivity"]["value"] >= 0.95
    assert metrics["threshold"] < youden["threshold"]
    # The same threshold by hand: the rule applied to the calibrated validation scores of predictions.csv.
    predictions = pd.read_csv(run / "predictions.csv")
    val = predictions[predictions["split"] == "val"]
    expected = choose_threshold(val["y_true"], val["y_score"], "sensitivity", min_sensitivity=0.95)
    assert metrics["threshold"] == pytest.approx(expected)
    assert json.loads((run / "config.json").read_text())["training"]["min_sensitivity"] == 0.95
    assert "[sensitivity]" in capsys.readouterr().out


def test_evaluate_refuses_a_threshold_rule_for_a_model_that_is_not_a_run(model_file, capsys):
    status = cli.main(["evaluate", "--model", str(model_file), "--threshold-rule", "fixed"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: --threshold-rule") and "not a run" in err
