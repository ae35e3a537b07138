"""Live progress inside an epoch (cxr/live_progress.py): the time left from measured batches, and the batch log
that training appends to the run directory."""

from __future__ import annotations

import pytest
from helpers_training import synthetic_dataset, tiny_config

from cxr import live_progress, runs, training
from cxr.live_progress import BatchLog, BatchTimer, read_batch_log, truncate_batch_log


def timed(durations: list[float], *, epochs_begun: int = 1) -> BatchTimer:
    """A timer fed batches of the given durations (seconds) within one epoch."""
    timer, now = BatchTimer(), 100.0
    for _ in range(epochs_begun):
        timer.epoch_begin(now)
    for seconds in durations:
        now += seconds
        timer.batch_end(now)
    return timer


def test_no_estimate_before_enough_batches_are_measured():
    # The first batch (graph tracing) is not counted, so three batches give two measurements: no guess yet.
    timer = timed([30.0, 0.1, 0.1])
    assert timer.seconds_left(batches_left=10, epochs_left=0, steps_per_epoch=13, validation_batches=0) is None
    timer = timed([30.0, 0.1, 0.1, 0.1])
    assert timer.seconds_left(batches_left=10, epochs_left=0, steps_per_epoch=13, validation_batches=0) \
        == pytest.approx(1.0)


def test_the_slow_first_batch_does_not_inflate_the_time_left():
    # 30 s of compilation then 0.1 s a batch: 96 batches and 9 epochs of 100 remain.
    timer = timed([30.0] + [0.1] * 4)
    left = timer.seconds_left(batches_left=96, epochs_left=9, steps_per_epoch=100, validation_batches=10)
    # 96 · 0.1 + 9 · 100 · 0.1 training, plus 10 validation passes of 10 batches at 0.35 · 0.1 s.
    assert left == pytest.approx(96 * 0.1 + 9 * 10.0 + 10 * 10 * 0.035)
    # A mean over every batch since the start (the former estimate) would have said about 10 times more.
    naive = (30.0 + 0.4) / 5 * (96 + 900)
    assert naive > 10 * left


def test_measured_validation_and_the_next_epochs_first_batch_are_counted():
    timer = timed([5.0, 0.2, 0.2, 0.2, 0.2])
    timer.validation_begin(200.0)
    timer.validation_end(203.0)
    timer.epoch_begin(300.0)
    timer.batch_end(300.7)  # waits 0.5 s for the shuffle buffer
    left = timer.seconds_left(batches_left=4, epochs_left=1, steps_per_epoch=5, validation_batches=99)
    assert left == pytest.approx(4 * 0.2 + 3.0 + (0.5 + 5 * 0.2 + 3.0))
    validating = timer.seconds_left(batches_left=0, epochs_left=0, steps_per_epoch=5, validation_batches=99,
                                    validating=True)
    assert validating == pytest.approx(3.0)


def test_short_epochs_give_an_estimate_after_enough_epochs_without_failing():
    # Two batches an epoch (a tiny data set): each epoch's first batch is not a typical one, so one batch an
    # epoch is measured; the timer must not fail before it has enough of them (it raised a TypeError).
    timer, now = BatchTimer(), 0.0
    estimates = []
    for _ in range(4):
        timer.epoch_begin(now)
        for seconds in (0.5, 0.1):
            now += seconds
            timer.batch_end(now)
        estimates.append(timer.seconds_left(batches_left=0, epochs_left=1, steps_per_epoch=2, validation_batches=1))
    assert estimates[:2] == [None, None] and estimates[2] is not None


def test_batch_log_round_trip_ignores_an_unfinished_line_and_truncates(tmp_path):
    run_dir = runs.new_run("tiny", tiny_config())
    log = BatchLog(run_dir)
    for epoch in (1, 2):
        for batch in (1, 2, 3):
            log.add(epoch, batch, {"loss": 1.0 / (epoch * batch), "accuracy": 0.5}, 0.1 * batch)
        log.flush()
    with open(run_dir / live_progress.BATCH_LOG_FILE, "a") as file:
        file.write("2,4,0.12")  # a row still being written
    frame = read_batch_log(run_dir, epoch=2)
    assert frame["batch"].tolist() == [1, 2, 3]
    assert frame["loss"].tolist() == pytest.approx([0.5, 0.25, 1 / 6], abs=1e-5)
    assert len(read_batch_log(run_dir)) == 6
    truncate_batch_log(run_dir, 1)
    assert read_batch_log(run_dir)["epoch"].tolist() == [1, 1, 1]
    truncate_batch_log(run_dir, 0)
    assert read_batch_log(run_dir).empty


def test_training_writes_one_row_per_batch():
    dataset = synthetic_dataset()
    config = tiny_config(epochs=2)
    run_dir = runs.new_run(dataset, config)
    training.train(dataset, config, run_dir, verbose=0)
    frame = read_batch_log(run_dir)
    batches = runs.read_status(run_dir)["batches"]
    assert frame["epoch"].tolist() == [1] * batches + [2] * batches
    assert frame["batch"].tolist() == list(range(1, batches + 1)) * 2
    assert frame["loss"].notna().all() and (frame["seconds"] >= 0).all()
