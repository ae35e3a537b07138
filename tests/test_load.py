"""Many users at once, shortened: 20 concurrent sessions predicting for a few seconds through the prediction path
behind the Predict page (one ``Predictor`` shared by every session, as ``st.cache_resource`` shares it), each with
its own image whose answer is known from a single-threaded run: no error, no lost or mixed-up result, memory flat.
And two page sessions (AppTest) side by side: one session's upload is never visible to the other.

The full version (one minute, a training running meanwhile) is ``python benchmarks/load_test.py``; its figures are
in docs/reliability.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("cxr_load_test", PROJECT_ROOT / "benchmarks" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_benchmark()


@pytest.fixture
def model_path(bench, tmp_path) -> Path:
    path = tmp_path / "load-model.keras"
    bench.brightness_model().save(path)
    return path


def test_session_images_have_distinct_known_answers(bench, model_path):
    from cxr.predict import Predictor

    uploads = bench.session_images(20)
    expected = bench.expected_answers(lambda: Predictor.load(model_path), uploads)
    assert len(set(np.round(expected, 6))) == 20  # a mix-up between any two sessions would be seen
    assert min(np.diff(expected)) > 1e-3


def test_twenty_concurrent_sessions_get_their_own_answers_and_memory_stays_flat(bench, model_path):
    from cxr.predict import Predictor

    uploads = bench.session_images(20)
    expected = bench.expected_answers(lambda: Predictor.load(model_path), uploads)
    shared = Predictor.load(model_path)  # cold: the first requests of all sessions race to warm it
    warm_up = bench.run_load(shared, uploads, expected, seconds=1.0)  # memory settles (TF's first allocations)
    assert warm_up.errors == 0 and warm_up.mixed_up == 0, warm_up.problems
    report = bench.run_load(shared, uploads, expected, seconds=8.0)
    print("\n" + report.table())
    assert report.errors == 0, report.problems
    assert report.mixed_up == 0, report.problems
    assert all(count >= 2 for count in report.requests_per_session), report.requests_per_session  # nobody starved
    assert report.requests == sum(report.requests_per_session)
    assert report.latency_p95_ms >= report.latency_median_ms > 0
    # Throughput (requests in 8 s) and memory growth are figures, not limits here: they are printed by
    # `python benchmarks/load_test.py --seconds 8 --no-training` and `benchmarks/bench_guards.py`.


def test_a_session_that_fails_does_not_disturb_the_others(bench, model_path):
    """Half the sessions send broken files: they get their error, the other half their own answers."""
    from cxr.predict import Predictor

    uploads = bench.session_images(20)
    expected = bench.expected_answers(lambda: Predictor.load(model_path), uploads)
    broken = [data[: len(data) // 2] if index % 2 else data for index, data in enumerate(uploads)]
    report = bench.run_load(Predictor.load(model_path), broken, expected, seconds=3.0)
    assert report.mixed_up == 0, report.problems
    assert report.errors == sum(report.requests_per_session[1::2]) > 0
    assert all("truncated" in text or "damaged" in text for text in report.problems), report.problems


def test_one_sessions_upload_is_never_visible_to_another(tmp_path, monkeypatch, bench):
    """Two browser sessions on one server (two AppTest instances in one process share st.cache_resource as the
    sessions of a server do): the second sees neither the first's upload nor its results, then gets only its own."""
    import cv2
    import streamlit as st
    from helpers_app import open_page, prepare_app

    from cxr import runs
    from cxr.config import TrainingConfig

    prepare_app(monkeypatch, bundled_model=tmp_path / "no-bundled-model")
    run_dir = runs.new_run("tiny", TrainingConfig(image_size=32, epochs=1))
    bench.brightness_model().save(run_dir / "model.keras")
    runs.write_status(run_dir, state="finished")

    def open_session():
        return open_page("pages/predict.py", timeout=120)

    def png(level: int) -> bytes:
        ok, encoded = cv2.imencode(".png", np.full((128, 128), level, np.uint8))
        assert ok
        return encoded.tobytes()

    first, second = open_session(), open_session()
    first.file_uploader[0].set_value([("alice-private.png", png(40), "image/png")])
    first.run()
    assert first.dataframe[0].value["file"].tolist() == ["alice-private.png"]

    second.run()
    assert not second.dataframe and not second.file_uploader[0].value
    assert "alice-private" not in repr(second.session_state) and "predictions" not in second.session_state
    second.file_uploader[0].set_value([("bob.png", png(220), "image/png")])
    second.run()
    assert second.dataframe[0].value["file"].tolist() == ["bob.png"]

    first.run()  # the first session still has only its own
    assert first.dataframe[0].value["file"].tolist() == ["alice-private.png"]
    first_p = first.dataframe[0].value["p_pneumonia"][0]
    second_p = second.dataframe[0].value["p_pneumonia"][0]
    assert first_p < 0.5 < second_p  # each answer is for its own image (dark 40 vs bright 220)
    st.cache_resource.clear()


@pytest.mark.slow
def test_load_while_a_training_runs(bench, model_path, cxr_home):
    """The benchmark's own set-up, shortened: a training child process trains while 20 sessions predict."""
    from cxr import jobs, runs
    from cxr.predict import Predictor

    run_id = bench.start_background_training(10)
    try:
        bench.wait_training_running(run_id)
        uploads = bench.session_images(20)
        expected = bench.expected_answers(lambda: Predictor.load(model_path), uploads)
        report = bench.run_load(Predictor.load(model_path), uploads, expected, seconds=8.0)
        print("\n" + report.table())
        assert report.errors == 0 and report.mixed_up == 0, report.problems
        assert runs.read_status(run_id)["state"] in ("running", "finished")
    finally:
        if runs.read_status(run_id)["state"] in ("queued", "running"):
            jobs.stop(run_id)
            jobs.wait(run_id, timeout=120)
    assert runs.read_status(run_id)["state"] in ("stopped", "finished")
