"""Start, follow, stop, queue and resume training child processes (no Streamlit here).

A run is trained by its own process, ``python -m cxr train --run RUN_ID`` (or ``--resume RUN_ID``),
started detached (its own session, output to ``train.log``) so it outlives the app that started it.

The queue: by default one run trains at a time per data set (``max_concurrent``). The waiting is
done by the child itself: it starts in state ``queued``, and polls — under an ``fcntl`` lock on
``runs/.queue.lock`` — until fewer than ``max_concurrent`` runs of its data set are running and it
is first in line (oldest ``queued_at``). No separate scheduler, so the queue survives the app exiting,
and a killed queued child simply drops out (its dead pid reads as ``interrupted``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cxr import paths, runs
from cxr.errors import RunError

QUEUE_LOCK_FILE = ".queue.lock"
POLL_SECONDS = 1.0  # how often a queued child looks for a free slot
RESUMABLE_STATES = ("stopped", "interrupted", "failed")


@contextlib.contextmanager
def queue_lock():
    """Exclusive lock over queue decisions across processes (an ``flock`` on ``runs/.queue.lock``)."""
    root = paths.runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / QUEUE_LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _queue_key(run_dir: Path) -> str:
    """Runs with the same key share the concurrency limit: the data set's folder, else its name."""
    config = runs.read_config(run_dir)
    return str(config.get("dataset_path") or config.get("dataset"))


def _runs_of(key: str) -> tuple[list[Path], list[tuple[str, str, Path]]]:
    """(running run folders, queued runs as (queued_at, run_id, folder)) sharing queue ``key``."""
    running, queued = [], []
    root = paths.runs_dir()
    if not root.is_dir():
        return running, queued
    for folder in root.iterdir():
        if not (folder / runs.CONFIG_FILE).exists():
            continue
        try:
            if _queue_key(folder) != key:
                continue
            status = runs.read_status(folder)
        except (RunError, OSError, ValueError):
            continue
        if status["state"] in ("running", "stopping"):
            running.append(folder)
        elif status["state"] == "queued":
            queued.append((str(status.get("queued_at") or ""), folder.name, folder))
    return running, sorted(queued)


def queue_position(run_id: str | os.PathLike) -> int | None:
    """1 for the next run to start, 2 for the one after, …; ``None`` when ``run_id`` is not queued."""
    run_dir = runs.run_path(run_id)
    if runs.read_status(run_dir)["state"] != "queued":
        return None
    _, queued = _runs_of(_queue_key(run_dir))
    for position, (_, _, folder) in enumerate(queued, start=1):
        if folder.resolve() == run_dir.resolve():
            return position
    return None


def try_acquire_slot(run_dir: Path, max_concurrent: int | None) -> bool:
    """If ``run_dir`` may start now, mark it ``running`` (under the queue lock) and return True.

    ``max_concurrent`` of ``None`` or 0 means no limit."""
    run_dir = Path(run_dir)
    with queue_lock():
        running, queued = _runs_of(_queue_key(run_dir))
        names = [name for _, name, _ in queued]
        position = names.index(run_dir.name) if run_dir.name in names else 0
        if max_concurrent and len(running) + position >= max_concurrent:
            runs.write_status(run_dir, state="queued", position=position + 1,
                              message=f"waiting: {len(running)} run(s) of this data set training, "
                                      f"position {position + 1} in the queue")
            return False

        runs.write_status(run_dir, state="running", position=None, message="starting",
                          **runs.process_identity())
        return True


def wait_for_slot(run_dir: Path, max_concurrent: int | None, *, should_stop: Callable[[], bool],
                  poll_seconds: float = POLL_SECONDS) -> bool:
    """Block until ``run_dir`` may train (True) or a stop was requested while waiting (False; the run
    is then marked ``stopped``). Called by the child process before it imports TensorFlow."""

    with queue_lock():
        runs.write_status(run_dir, state="queued", **runs.process_identity())
    while True:
        if should_stop() or runs.stop_requested(run_dir):
            (run_dir / runs.STOP_FILE).unlink(missing_ok=True)
            runs.write_status(run_dir, state="stopped", position=None, stop_reason="queue",
                              message="cancelled while queued")
            return False
        if try_acquire_slot(run_dir, max_concurrent):
            return True
        time.sleep(poll_seconds)


def child_command(run_id: str, *, resume: bool = False, max_concurrent: int | None = 1) -> list[str]:
    """The command line of a training child process."""
    command = [sys.executable, "-m", "cxr", "train", "--resume" if resume else "--run", run_id]
    command += ["--max-concurrent", str(max_concurrent or 0)]
    return command


def _spawn(run_dir: Path, command: list[str]) -> subprocess.Popen:
    environment = dict(os.environ)
    # The child must import this same cxr, wherever the caller's working directory is.
    project = str(paths.PROJECT_ROOT)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [project, environment.get("PYTHONPATH")]))
    environment["CXR_HOME"] = str(paths.home())
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    environment.setdefault("PYTHONUNBUFFERED", "1")
    with open(run_dir / runs.LOG_FILE, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=project, env=environment, start_new_session=True)
    # Record the pid at once, so a child that dies before it writes anything reads as interrupted.
    import psutil

    try:
        identity = {"pid": process.pid, "pid_created": psutil.Process(process.pid).create_time()}
    except psutil.NoSuchProcess:
        identity = {"pid": process.pid}
    with queue_lock():
        status = runs.read_status(run_dir)
        if status["state"] == "queued" and status.get("pid") in (None, process.pid):
            runs.write_status(run_dir, **identity)
    return process


def start_training(dataset, config, *, max_concurrent: int | None = 1) -> str:
    """Create a run for ``dataset`` (a name or path ``cxr.datasets.load_dataset`` knows, or a data set
    object) with ``config`` (a ``TrainingConfig``), start its child process, return the run id.

    The run waits in state ``queued`` while ``max_concurrent`` runs of the same data set train."""
    run_dir = runs.new_run(dataset, config)
    _spawn(run_dir, child_command(run_dir.name, max_concurrent=max_concurrent))
    return run_dir.name


def stop(run_id: str | os.PathLike) -> str:
    """Ask a run to stop after its current batch (or leave the queue); return its state now.

    Raises ``RunError`` when the run is not queued or training."""
    run_dir = runs.run_path(run_id)
    state = runs.read_status(run_dir)["state"]
    if state not in runs.ACTIVE_STATES:
        raise RunError(f"Run {run_dir.name} is {state}, not queued or training; there is nothing to stop."
                       + (" Resume it with `python -m cxr train --resume RUN`." if state in RESUMABLE_STATES
                          else ""))
    if state == "running":
        # "stopping" is written before the stop file exists: the trainer only writes "stopped" after it
        # has seen the file, so a late "stopping" can never overwrite a finished stop.
        status = runs.write_status(run_dir, only_if_state=("running",), state="stopping",
                                   message="stop requested; finishing the current batch")
        runs.request_stop(run_dir)
        return status["state"]
    runs.request_stop(run_dir)
    return state


def resume(run_id: str | os.PathLike, *, max_concurrent: int | None = 1) -> str:
    """Continue a stopped, interrupted or failed run from its last checkpoint in a new child process."""
    run_dir = runs.run_path(run_id)
    state = runs.read_status(run_dir)["state"]
    if state not in RESUMABLE_STATES:
        raise RunError(f"Run {run_dir.name} is {state}; only a stopped, interrupted or failed run can be "
                       f"resumed.")
    (run_dir / runs.STOP_FILE).unlink(missing_ok=True)
    runs.write_status(run_dir, state="queued", pid=None, pid_created=None, queued_at=runs.now_iso(),
                      message="waiting to resume", error=None)
    _spawn(run_dir, child_command(run_dir.name, resume=True, max_concurrent=max_concurrent))
    return run_dir.name


def follow(run_id: str | os.PathLike, *, interval: float = 1.0, timeout: float | None = None) -> Iterator[dict]:
    """Yield ``read_status(run_id)`` every ``interval`` seconds until the run is no longer active."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = runs.read_status(run_id)
        yield status
        if status["state"] not in runs.ACTIVE_STATES:
            return
        if deadline is not None and time.monotonic() > deadline:
            return
        time.sleep(interval)


def wait(run_id: str | os.PathLike, *, timeout: float | None = None, interval: float = 0.5) -> dict:
    """Block until the run leaves the active states (or ``timeout``); return its last status."""
    last: dict = {}
    for current in follow(run_id, interval=interval, timeout=timeout):
        last = current
    return last
