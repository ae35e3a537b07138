"""Child processes (cxr/jobs.py, cxr/commands/): queue, stop, SIGTERM, SIGKILL then resume, CLI."""

from __future__ import annotations

import os
import signal

import pytest
from helpers_training import run_cli, tiny_config, wait_until, write_npz

from cxr import jobs, runs
from cxr.datasets import Dataset


@pytest.fixture
def npz_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    # 128 images: 96 train after the 25 % validation split, under the population detector's 100-image minimum,
    # so a finished run skips that fit (about 15 s of EfficientNet features per run, beside what these tests
    # check); still 24 batches of 4 an epoch, so a kill lands mid-epoch.
    return Dataset.from_npz(write_npz(tmp_path / "tiny.npz", train=128))


def _status(run_id):
    return runs.read_status(run_id)


def _in_epoch(run_id, epoch):
    status = _status(run_id)
    if status["state"] not in ("queued", "running"):
        raise AssertionError(f"run ended early: {status} {(runs.run_path(run_id) / 'train.log').read_text()}")
    return status["state"] == "running" and (status["epoch"] or 0) >= epoch and (status["batch"] or 0) >= 1


def test_cli_rejects_bad_settings_with_one_line(tmp_path, cxr_home):
    path = write_npz(tmp_path / "tiny.npz", train=8, test=4)
    result = run_cli(["train", str(path), "--epochs", "0"], cxr_home, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: epochs must be an integer from 1")
    result = run_cli(["stop", "no-such-run"], cxr_home, timeout=60)
    assert result.returncode == 2 and "no-such-run" in result.stderr


@pytest.mark.slow
def test_queue_runs_one_at_a_time_per_dataset_and_a_queued_run_can_be_cancelled(npz_dataset, cxr_home):
    config = tiny_config(epochs=1, batch_size=16)
    first = jobs.start_training(npz_dataset, config, max_concurrent=1)
    second = jobs.start_training(npz_dataset, config, max_concurrent=1)
    third = jobs.start_training(npz_dataset, config, max_concurrent=1)
    wait_until(lambda: _status(first)["state"] == "running", what="first run to start")
    wait_until(lambda: jobs.queue_position(third) == 2, what="third run queued behind the second")
    assert _status(second)["state"] == "queued" and jobs.queue_position(second) == 1
    assert jobs.queue_position(first) is None
    listing = run_cli(["runs"], cxr_home, timeout=60).stdout
    assert "queued #1" in listing and "queued #2" in listing

    assert jobs.stop(third) == "queued"
    assert jobs.wait(third, timeout=60)["state"] == "stopped"
    assert runs.read_history(third).empty

    first_status = jobs.wait(first, timeout=180)
    second_status = jobs.wait(second, timeout=180)
    assert first_status["state"] == "finished", (runs.run_path(first) / "train.log").read_text()
    assert second_status["state"] == "finished", (runs.run_path(second) / "train.log").read_text()
    # The second started training only once the first had finished.
    assert second_status["started"] >= first_status["updated"]
    assert runs.read_history(second)["epoch"].tolist() == [1]


@pytest.mark.slow
def test_sigkill_mid_epoch_reads_interrupted_and_resume_loses_and_repeats_nothing(npz_dataset, cxr_home):
    config = tiny_config(epochs=3, batch_size=4)
    run_id = jobs.start_training(npz_dataset, config)
    wait_until(lambda: _in_epoch(run_id, 2), timeout=120, what="the run to be in epoch 2")
    pid = _status(run_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _status(run_id)["state"] == "interrupted", what="the killed run to read interrupted")
    finished = runs.read_checkpoint_info(run_id)["epoch"]
    assert finished >= 1
    assert runs.read_history(run_id)["epoch"].tolist()[:finished] == list(range(1, finished + 1))

    assert jobs.resume(run_id) == run_id
    status = jobs.wait(run_id, timeout=180)
    assert status["state"] == "finished", (runs.run_path(run_id) / "train.log").read_text()
    assert runs.read_history(run_id)["epoch"].tolist() == [1, 2, 3]
    assert (runs.run_path(run_id) / runs.MODEL_FILE).exists()


@pytest.mark.slow
def test_sigterm_and_stop_command_stop_after_the_batch_and_stay_resumable(npz_dataset, cxr_home):
    # Many epochs, so that both requests land during training however slowly `cxr stop` starts on a busy
    # machine: with 3 tiny epochs the stop command once arrived after the last one (state stopped, 3 of 3).
    epochs = 40
    config = tiny_config(epochs=epochs, batch_size=4)
    by_signal = jobs.start_training(npz_dataset, config, max_concurrent=0)
    by_command = jobs.start_training(npz_dataset, config, max_concurrent=0)
    wait_until(lambda: _in_epoch(by_signal, 1) and _in_epoch(by_command, 1), timeout=120,
               what="both runs to train")
    os.kill(_status(by_signal)["pid"], signal.SIGTERM)
    result = run_cli(["stop", by_command, "--wait"], cxr_home, timeout=120)
    assert result.returncode == 0 and "stopped" in result.stdout
    for run_id in (by_signal, by_command):
        status = jobs.wait(run_id, timeout=120)
        assert status["state"] == "stopped", (runs.run_path(run_id) / "train.log").read_text()
        info = runs.read_checkpoint_info(run_id) or {"epoch": 0}
        assert len(runs.read_history(run_id)) == info["epoch"] < epochs
    with pytest.raises(ValueError, match="nothing to stop"):
        jobs.stop(by_signal)
