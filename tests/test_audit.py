"""The audit log (cxr.audit): one valid JSON line per prediction, under concurrent writer processes and rotation."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from cxr import audit
from cxr.audit import FIELDS, AuditLog, record_of

WRITERS = 20
PREDICTIONS_PER_WRITER = 40


class Verdict:
    """Stands for cxr.population.PopulationVerdict (contracts.md): only ``to_dict`` is used."""

    def __init__(self, status, score=None, percentile=None, reasons=()):
        self.values = {"status": status, "score": score, "percentile": percentile, "threshold": 3.0,
                       "reasons": tuple(reasons)}

    def to_dict(self):
        return dict(self.values)


def result(probability=0.8, label="pneumonia", threshold=0.42, error=None, population=None):
    return SimpleNamespace(name="patient-name.png", probability=probability, label=label, threshold=threshold,
                           error=error, population=population, image=object())


def read_lines(paths: list[Path]) -> list[dict]:
    records = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n"), f"{path.name} ends in the middle of a line"
        records += [json.loads(line) for line in text.splitlines()]  # a torn or merged line fails here
    return records


def test_a_record_holds_the_hash_never_the_image_or_the_name():
    data = b"\x89PNG fake image bytes"
    verdict = Verdict("outside", score=7.5, percentile=99.7,
                      reasons=("looks unlike the pediatric chest X-rays this model was trained on",
                               "DICOM says this is a lateral view"))
    record = record_of(result(label=None, population=verdict), data, model_id="default", model_version="ab12",
                       time="2026-11-26T10:00:00.000+00:00")
    assert tuple(record) == FIELDS
    assert record == {
        "time": "2026-11-26T10:00:00.000+00:00", "model_id": "default", "model_version": "ab12",
        "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "probability": 0.8, "label": None,
        "threshold": 0.42, "error": False, "population": "outside", "population_score": 7.5,
        "population_percentile": 99.7,
        "population_reason": "looks unlike the pediatric chest X-rays this model was trained on; DICOM says this "
                             "is a lateral view",
    }
    assert "patient-name" not in json.dumps(record)


def test_a_record_without_a_verdict_or_an_answer():
    record = record_of(result(probability=None, label=None, threshold=None, error="patient-name.png is empty"),
                       b"", model_id="run-1", model_version="v")
    assert record["error"] is True and record["probability"] is None and record["population"] is None
    assert "patient-name" not in json.dumps(record)  # the error message may quote the name: not kept
    assert record["time"].endswith("+00:00")
    assert record_of(result(population=Verdict("in")), b"x", model_id="d", model_version="v")["population"] == "in"


def writer(path: str, writer_number: int, max_bytes: int, backups: int, start) -> None:
    log = AuditLog(path, max_bytes=max_bytes, backups=backups)
    start.wait()  # every writer begins at once
    for index in range(PREDICTIONS_PER_WRITER):
        data = f"image {writer_number}-{index}".encode()
        record = record_of(result(probability=index / PREDICTIONS_PER_WRITER, population=Verdict(
            "outside", reasons=(f"a long reason to make lines longer than a pipe buffer would hide {'x' * 900}",))),
            data, model_id=f"writer-{writer_number}", model_version=str(index))
        log.write([record])


def run_writers(path: Path, *, max_bytes: int, backups: int) -> None:
    context = multiprocessing.get_context("fork")
    start = context.Barrier(WRITERS)
    processes = [context.Process(target=writer, args=(str(path), number, max_bytes, backups, start))
                 for number in range(WRITERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0


def assert_one_line_per_prediction(records: list[dict]) -> None:
    seen = [(record["model_id"], int(record["model_version"])) for record in records]
    expected = {(f"writer-{number}", index) for number in range(WRITERS) for index in range(PREDICTIONS_PER_WRITER)}
    assert len(seen) == len(expected) == WRITERS * PREDICTIONS_PER_WRITER
    assert set(seen) == expected
    for record in records:
        number, index = record["model_id"].removeprefix("writer-"), record["model_version"]
        assert record["sha256"] == hashlib.sha256(f"image {number}-{index}".encode()).hexdigest()


def test_twenty_concurrent_writer_processes_leave_exactly_one_valid_line_per_prediction(tmp_path):
    path = tmp_path / "audit.jsonl"
    run_writers(path, max_bytes=10**9, backups=3)
    assert AuditLog(path).files() == [path]  # far from the size limit: no rotation
    assert_one_line_per_prediction(read_lines([path]))


def test_concurrent_writers_across_rotations_lose_and_repeat_nothing(tmp_path):
    path = tmp_path / "audit.jsonl"
    # ~1.3 kB lines, 800 of them, 100 kB files: about 10 rotations while 20 processes write.
    run_writers(path, max_bytes=100_000, backups=50)
    log = AuditLog(path, max_bytes=100_000, backups=50)
    files = log.files()
    assert len(files) >= 8
    for file in files:
        assert file.stat().st_size <= 100_000
    assert_one_line_per_prediction(read_lines(files))


def test_rotation_keeps_the_newest_backups_and_drops_the_oldest(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=250, backups=2)
    line_length = len(json.dumps({"n": 0, "pad": "p" * 90}, separators=(",", ":"))) + 1
    assert 2 * line_length <= 250 < 3 * line_length  # two lines fit in a file
    for number in range(7):
        log.write([{"n": number, "pad": "p" * 90}])
    assert log.files() == [path, tmp_path / "audit.jsonl.1", tmp_path / "audit.jsonl.2"]
    assert [record["n"] for record in read_lines([path])] == [6]
    assert [record["n"] for record in read_lines([tmp_path / "audit.jsonl.1"])] == [4, 5]
    assert [record["n"] for record in read_lines([tmp_path / "audit.jsonl.2"])] == [2, 3]
    assert not (tmp_path / "audit.jsonl.3").exists()  # records 0 and 1 were rotated out


def test_a_line_longer_than_the_limit_is_written_whole_into_its_own_file(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=50, backups=1)
    log.write([{"n": 1}])
    log.write([{"n": 2, "pad": "p" * 200}])
    assert [record["n"] for record in read_lines([path])] == [2]
    assert [record["n"] for record in read_lines([tmp_path / "audit.jsonl.1"])] == [1]


def test_without_backups_the_full_file_starts_again(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=30, backups=0)
    log.write([{"n": 1, "pad": "pppppp"}, {"n": 2, "pad": "pppppp"}])
    assert [record["n"] for record in read_lines([path])] == [2]
    assert log.files() == [path]


def test_the_readme_pandas_one_liner_reads_the_log(tmp_path):
    path = tmp_path / "logs" / "audit.jsonl"  # the folder is created on first write
    log = AuditLog(path)
    records = [record_of(result(probability=p, population=Verdict("in")), bytes([n]), model_id="default",
                         model_version="v1") for n, p in enumerate((0.1, 0.9))]
    assert log.write(records) == 2
    frame = pd.read_json(path, lines=True)
    assert list(frame.columns) == list(FIELDS)
    assert frame["probability"].tolist() == [0.1, 0.9]
    assert frame["population"].tolist() == ["in", "in"]


def test_settings_turn_the_log_on_and_off(tmp_path):
    from cxr.deployment import from_environment

    assert AuditLog.from_settings(from_environment({}).audit) is None
    log = AuditLog.from_settings(from_environment({"CXR_AUDIT_LOG": str(tmp_path / "a.jsonl"),
                                                   "CXR_AUDIT_LOG_MAX_MB": "2", "CXR_AUDIT_LOG_BACKUPS": "3"}).audit)
    assert (log.path, log.max_bytes, log.backups) == (tmp_path / "a.jsonl", 2_000_000, 3)


def test_model_version_is_the_files_sha256(tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(b"weights" * 300_000)  # more than one 1 MiB block
    assert audit.file_sha256(model) == hashlib.sha256(model.read_bytes()).hexdigest()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_number_is_written_as_null(tmp_path, value):
    record = record_of(result(probability=value), b"x", model_id="d", model_version="v")
    assert record["probability"] is None
    AuditLog(tmp_path / "a.jsonl").write([record])  # allow_nan=False would raise on NaN


def test_a_real_population_verdict_is_recorded():
    from cxr.population import PopulationVerdict

    verdict = PopulationVerdict(status="outside", score=9.5, percentile=99.9, threshold=4.0,
                                reasons=("DICOM says this is a lateral view",))
    record = record_of(result(label=None, population=verdict), b"x", model_id="default", model_version="v")
    assert (record["population"], record["population_score"], record["population_percentile"],
            record["population_reason"]) == ("outside", 9.5, 99.9, "DICOM says this is a lateral view")
