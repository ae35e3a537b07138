"""The model card of a run: a short Markdown page and its JSON twin, written by ``cxr.run_results.write_run_results``.

After Mitchell et al., "Model Cards for Model Reporting" (2019), cut to what a clinician or a reviewer
asks first: what data, which splits, which settings, how good (with intervals), at which threshold and
why, how calibrated, what it is for, and what it must not be used for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cxr.atomic import atomic_write_json, atomic_write_text
from cxr.population_detector import card_info

MODEL_CARD_VERSION = 1

KERMANY_CITATION = (
    'Kermany, Zhang, Goldbaum et al., "Identifying Medical Diagnoses and Treatable Diseases by Image-Based '
    'Deep Learning", Cell 172(5):1122-1131, 2018; data: Mendeley Data doi:10.17632/rscbjbr9sj.2 (CC BY 4.0)'
)

INTENDED_USE = (
    "Research and teaching: reproducing and studying a chest X-ray classifier (normal vs pneumonia), "
    "comparing training settings, and demonstrating explanations and calibration. A second reader for "
    "discussion, never the only reader."
)

KERMANY_LIMITATION = (
    "Trained on pediatric chest X-rays (children aged 1-5) from a single hospital (Guangzhou Women and "
    "Children's Medical Center); performance on adults, other hospitals, other scanners or other "
    "populations is unknown until validated externally."
)
OTHER_DATA_LIMITATION = (
    "Trained on one data set only ({name}); performance on other hospitals, scanners or populations is "
    "unknown until validated externally."
)

LIMITATIONS = [
    "Not a diagnostic device: it is not cleared or approved for clinical use and must not be used to "
    "diagnose, treat or triage patients.",
    "Two classes only: normal vs pneumonia (bacterial and viral together). Other findings (effusion, "
    "tuberculosis, COVID-19, devices, tumours) are outside what it learnt and may be called either class.",
    "PPV and NPV depend on how common pneumonia is: they are reported at the prior of each evaluated set "
    "and will be different where pneumonia is rarer or more common.",
    "Heat maps (Grad-CAM, SHAP) show what influenced the score, not where the disease is.",
]


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _dataset_description(dataset_name: str | None, dataset_path: str | None = None) -> dict[str, Any]:
    """Source and split counts of an imported data set; as much as can be found (never raises)."""
    description: dict[str, Any] = {"name": dataset_name}
    if not dataset_name and not dataset_path:
        return description
    # The path the run was trained from first (it may be outside $CXR_HOME), then the name.
    reference = dataset_path if dataset_path and Path(dataset_path).is_dir() else dataset_name
    try:
        from cxr.datasets import load_dataset

        dataset = load_dataset(reference, verify=False, repair=False)
    except Exception:  # noqa: BLE001 - a card is still useful without the data set (moved, deleted)
        return description
    description["source"] = dataset.info.get("source")
    description["image_size"] = dataset.image_size
    try:
        counts = dataset.class_counts()
        description["splits"] = {
            split: {row["class"]: int(row["count"]) for _, row in part.iterrows()}
            for split, part in counts.groupby("split", sort=False)
        }
    except Exception:  # noqa: BLE001
        pass
    return description


def build_model_card(
    metrics: dict[str, Any], *, config: dict | None = None, run_id: str | None = None, dataset: dict | None = None,
    population: dict | None = None,
) -> dict[str, Any]:
    """The model card as a JSON-ready dict.

    ``metrics``: a run's ``metrics.json`` (from ``write_run_results``); ``config``: its ``config.json``
    (``{"dataset", "training", ...}``) or ``None``; ``dataset``: ``{"name", "source", "splits": {split:
    {class: count}}}`` or ``None`` to look the data set named in ``config`` up. ``population``: the
    run's ``population.json`` (the population detector), ``None`` when it has none.
    """
    config = config or {}
    training = dict(config.get("training") or {})
    if dataset is None:
        dataset = _dataset_description(config.get("dataset"), config.get("dataset_path"))
    source = str(dataset.get("source") or "")
    is_kermany = (
        "chest_xray" in source.lower()
        or "kermany" in source.lower()
        or "chest_xray" in str(dataset.get("name") or "").lower()
    )

    def summary(split: str) -> dict | None:
        entry = metrics.get(split)
        if not entry:
            return None
        keys = (
            "n",
            "prior",
            "accuracy",
            "sensitivity",
            "specificity",
            "ppv",
            "npv",
            "auc",
            "average_precision",
            "brier",
            "ece",
            "confusion_matrix",
        )
        return {key: entry.get(key) for key in keys}

    calibration = metrics.get("calibration") or {}
    return {
        "version": MODEL_CARD_VERSION,
        "run_id": run_id,
        "model": {
            "architecture": training.get("model"),
            "image_size": training.get("image_size"),
            "input": "raw uint8 grayscale pixels (n, s, s, 1); scaling is inside the model",
            "output": "P(pneumonia) from a sigmoid, then temperature scaling",
        },
        "data": {
            "dataset": dataset.get("name"),
            "source": dataset.get("source"),
            "citation": KERMANY_CITATION if is_kermany else None,
            "splits": dataset.get("splits"),
            "split_method": "validation carved from train, grouped by patient, stratified by class; "
            "test = the source's own test split when it has one",
        },
        "settings": training,
        "threshold": {
            "value": metrics.get("threshold"),
            "rule": metrics.get("threshold_rule"),
            "min_sensitivity": metrics.get("min_sensitivity"),
            "chosen_on": "validation split (calibrated scores); the test split never chose anything",
        },
        "calibration": {
            "method": "temperature scaling fitted on validation",
            "temperature": metrics.get("temperature"),
            "validation": calibration.get("validation"),
            "test": calibration.get("test"),
        },
        "metrics": {
            "validation": summary("validation"),
            "test": summary("test"),
            "external": {name: summary_entry for name, summary_entry in (metrics.get("external") or {}).items()},
        },
        "intended_use": INTENDED_USE,
        "limitations": [
            LIMITATIONS[0],
            KERMANY_LIMITATION if is_kermany else OTHER_DATA_LIMITATION.format(name=dataset.get("name")),
            *LIMITATIONS[1:],
        ],
        "notes": list(metrics.get("notes") or []),
        "population": card_info(population),
    }


def _interval(entry: dict | None, *, scale: float, digits: int, unit: str = "") -> str:
    """``{value, low, high}`` as "86.9 % (84.1-89.4)" (or without the interval when it is unknown)."""
    if not entry or entry.get("value") is None:
        return "n/a"
    value = f"{scale * entry['value']:.{digits}f}{unit}"
    if entry.get("low") is None:
        return value
    return f"{value} ({scale * entry['low']:.{digits}f}-{scale * entry['high']:.{digits}f})"


def _percent(entry: dict | None) -> str:
    return _interval(entry, scale=100, digits=1, unit=" %")


def _auc(entry: dict | None) -> str:
    return _interval(entry, scale=1, digits=3)


RULE_TEXT = {"youden": "Youden's J (sensitivity + specificity - 1) maximised",
             "fixed": "a fixed value from the training settings",
             "manual": "set by hand on the Evaluate page, looking at validation figures"}


def _rule_text(threshold: dict) -> str:
    """How the threshold was chosen, in words (the rule's name when it has no sentence)."""
    if threshold.get("rule") == "sensitivity":
        return f"highest threshold keeping validation sensitivity >= {100 * threshold['min_sensitivity']:.0f} %"
    return RULE_TEXT.get(threshold.get("rule"), str(threshold.get("rule")))


def _data_lines(data: dict) -> list[str]:
    """The card's "Data" section: the data set, its source and its split counts."""
    lines = ["## Data",
             f"- Data set: `{data.get('dataset')}`" + (f" from `{data['source']}`" if data.get("source") else "")]
    if data.get("citation"):
        lines.append(f"- Source: {data['citation']}")
    lines.append(f"- Splits: {data['split_method']}")
    if data.get("splits"):
        lines += ["", "| split | normal | pneumonia | total |", "| --- | ---: | ---: | ---: |"]
        for split, counts in data["splits"].items():
            normal, pneumonia = counts.get("normal", 0), counts.get("pneumonia", 0)
            lines.append(f"| {split} | {normal} | {pneumonia} | {normal + pneumonia} |")
    return lines + [""]


def render_markdown(card: dict[str, Any]) -> str:
    """The model card as a short Markdown page."""
    lines = [f"# Model card{' — run ' + card['run_id'] if card.get('run_id') else ''}", ""]
    lines += ["**Not a diagnostic device.** " + card["intended_use"], ""]
    model = card["model"]
    lines += [
        "## Model",
        f"- Architecture: `{model.get('architecture')}`, input {model.get('image_size')} px "
        "grayscale (raw uint8 pixels; scaling inside the model)",
        f"- Output: {model['output']}",
        "",
    ]
    lines += _data_lines(card["data"])
    if card.get("settings"):
        shown = (
            "model",
            "image_size",
            "epochs",
            "batch_size",
            "optimizer",
            "learning_rate",
            "schedule",
            "class_weighting",
            "dropout_rate",
            "early_stopping",
            "rotation_degrees",
            "zoom",
            "width_shift",
            "height_shift",
            "horizontal_flip",
            "brightness",
            "contrast",
            "seed",
        )
        settings = ", ".join(f"{key} {card['settings'][key]}" for key in shown if key in card["settings"])
        lines += ["## Settings", settings, ""]
    threshold = card["threshold"]
    rule = _rule_text(threshold)
    calibration = card["calibration"]
    lines += [
        "## Decision threshold and calibration",
        f"- Threshold on calibrated P(pneumonia): **{threshold['value']:.4f}** ({rule}; chosen on the "
        "validation split only)"
        if threshold.get("value") is not None
        else "- Threshold: n/a",
        f"- Temperature scaling: T = {calibration['temperature']:.3f} (fitted on validation)"
        if calibration.get("temperature") is not None
        else "- Temperature: n/a",
    ]
    for split in ("validation", "test"):
        entry = calibration.get(split)
        if entry:
            lines.append(
                f"- ECE on {split}: {entry['ece_before']:.3f} before, {entry['ece_after']:.3f} after scaling; "
                f"Brier {entry['brier_before']:.3f} -> {entry['brier_after']:.3f}"
            )
    lines += [
        "",
        "## Performance (95 % confidence intervals: Wilson; AUC: bootstrap)",
        "",
        "| set | images | prior | accuracy | sensitivity | specificity | PPV | NPV | AUC |",
        "| --- | ---: | ---: | --- | --- | --- | --- | --- | --- |",
    ]
    rows = [("validation", card["metrics"].get("validation")), ("test", card["metrics"].get("test"))]
    rows += [(f"external: {name}", entry) for name, entry in (card["metrics"].get("external") or {}).items()]
    for name, entry in rows:
        if not entry:
            continue
        lines.append(
            f"| {name} | {entry['n']} | {100 * entry['prior']:.1f} % | {_percent(entry['accuracy'])} | "
            f"{_percent(entry['sensitivity'])} | {_percent(entry['specificity'])} | {_percent(entry['ppv'])} | "
            f"{_percent(entry['npv'])} | {_auc(entry['auc'])} |"
        )
    lines += [
        "",
        "PPV and NPV hold at the prior shown; they change with how common pneumonia is. Validation also chose the "
        "threshold, the temperature and the best epoch, so its figures are optimistic; test is the honest estimate.",
        "",
        "## Intended use",
        card["intended_use"],
        "",
        "## Limitations",
    ]
    lines += [f"- {item}" for item in card["limitations"]]
    if card.get("population"):
        from cxr.population_detector import card_lines

        lines += ["", "## Population check", *card_lines(card["population"])]
    if card.get("notes"):
        lines += ["", "## Notes"] + [f"- {note}" for note in card["notes"]]
    return "\n".join(lines) + "\n"


def write_model_card(run_dir, metrics: dict[str, Any], *, config: dict | None = None) -> tuple[Path, Path]:
    """Write ``model_card.md`` and ``model_card.json`` into ``run_dir``; returns both paths.

    ``config`` defaults to the run's ``config.json`` (absent for a bare model folder: the card then says
    less about data and settings, but still gives metrics, threshold, intended use and limits).
    """

    run_dir = Path(run_dir)
    if config is None:
        config = _load_json(run_dir / "config.json")
    card = build_model_card(metrics, config=config, run_id=run_dir.name,
                            population=_load_json(run_dir / "population.json"))
    markdown_path, json_path = run_dir / "model_card.md", run_dir / "model_card.json"
    atomic_write_json(json_path, card)
    atomic_write_text(markdown_path, render_markdown(card))
    return markdown_path, json_path


__all__ = ["build_model_card", "render_markdown", "write_model_card", "INTENDED_USE", "LIMITATIONS"]
