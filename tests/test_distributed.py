"""tf.distribute: MirroredStrategy in process, and a real two-worker MultiWorkerMirroredStrategy run on
localhost (two processes, CPU, one tiny epoch) whose chief saves a model that loads and predicts."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers_training import PROJECT_ROOT, child_environment, synthetic_dataset, tiny_config, write_npz

from cxr import distribution, runs, training


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_mirrored_strategy_trains_and_saves():
    dataset = synthetic_dataset(train=24, test=8)
    config = tiny_config(epochs=1, strategy="mirrored")
    run_dir = runs.new_run(dataset, config)
    result = training.train(dataset, config, run_dir, verbose=0)
    assert result.state == "finished"
    assert runs.read_history(run_dir)["epoch"].tolist() == [1]


def test_multi_worker_without_tf_config_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribution.make_strategy("multi-worker")


@pytest.mark.parametrize(("tf_config", "expected"), [
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, False),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, True),
])
def test_chief_is_worker_zero_unless_a_chief_is_named(monkeypatch, tf_config, expected):
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert distribution.is_chief("multi-worker") is expected
    assert distribution.is_chief("default") is True


@pytest.mark.slow
def test_two_worker_multi_worker_training_on_localhost(tmp_path, cxr_home):
    data = write_npz(tmp_path / "tiny.npz", train=32, test=8)
    cluster = {"worker": [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]}
    run_dir = tmp_path / "multi-worker-run"
    processes = []
    for index in (0, 1):
        environment = child_environment(cxr_home)
        environment["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        command = [sys.executable, "-m", "cxr", "train", str(data), "--strategy", "multi-worker", "--epochs", "1",
                   "--batch-size", "8", "--quiet", "--run-dir", str(run_dir)]
        processes.append(subprocess.Popen(command, cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=240)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert [process.returncode for process in processes] == [0, 0], "\n\n".join(outputs)
    # Only the chief wrote the run; the other worker used a scratch folder it removed.
    assert runs.read_status(run_dir)["state"] == "finished"
    assert runs.read_history(run_dir)["epoch"].tolist() == [1]
    assert runs.read_config(run_dir)["training"]["strategy"] == "multi-worker"
    model = keras.models.load_model(run_dir / runs.MODEL_FILE, safe_mode=True)
    scores = model.predict(np.zeros((2, 32, 32, 1), np.uint8), verbose=0)
    assert scores.shape == (2, 1) and np.all((scores >= 0) & (scores <= 1))
    # Both workers trained the same synchronized model: identical loss lines in both logs.
    # (Metric fields only: the step time, e.g. "753ms/step", differs between the two processes.)
    loss_lines = [[field for field in [line for line in output.splitlines() if "loss:" in line][-1].split(" - ")
                   if ":" in field] for output in outputs]
    assert loss_lines[0] and loss_lines[0] == loss_lines[1]
