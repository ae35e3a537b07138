"""Plain-text reports of metrics dicts, for the terminal and the logs.

``format_metrics`` renders one ``cxr.evaluation.binary_metrics`` dict; ``format_run_metrics`` a run's whole
``metrics.json`` (rule, calibration, validation, test, external).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from cxr.config import CLASS_NAMES


def _format_proportion(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    text = f"{100 * entry['value']:5.1f} %"
    if entry.get("low") is not None:
        text += f" (95 % CI {100 * entry['low']:.1f}-{100 * entry['high']:.1f})"
    if "successes" in entry:
        text += f"  [{entry['successes']}/{entry['total']}]"
    return text


def format_metrics(metrics: dict[str, Any], *, title: str = "") -> str:
    """A plain-text report of one ``binary_metrics`` dict, for the terminal and the logs."""
    lines = [title] if title else []
    lines.append(
        f"images: {metrics['n']} ({metrics['num_pneumonia']} pneumonia, {metrics['num_normal']} normal; "
        f"prior P(pneumonia) = {100 * metrics['prior']:.1f} %)   threshold: {metrics['threshold']:.4f}"
    )
    # JSON writers may sort keys; show rows and columns in the classification report's own order.
    report = pd.DataFrame.from_dict(metrics["report"], orient="index")
    rows = [row for row in (*CLASS_NAMES, "accuracy", "macro avg", "weighted avg") if row in report.index]
    report = report.reindex(index=rows, columns=["precision", "recall", "f1-score", "support"])
    lines.append(report.to_string(float_format=lambda value: f"{value:.3f}"))
    cm = metrics["confusion_matrix"]
    lines.append(f"confusion matrix (rows true, columns predicted; normal, pneumonia): {cm[0]} / {cm[1]}")
    for key, label in (
        ("accuracy", "accuracy"),
        ("sensitivity", "sensitivity (recall pneumonia)"),
        ("specificity", "specificity (recall normal)"),
    ):
        lines.append(f"{label:32s} {_format_proportion(metrics[key])}")
    prior = f"at prior {100 * metrics['prior']:.1f} %"
    lines.append(f"{'PPV (precision pneumonia)':32s} {_format_proportion(metrics['ppv'])}  {prior}")
    lines.append(f"{'NPV (precision normal)':32s} {_format_proportion(metrics['npv'])}  {prior}")
    auc = metrics["auc"]
    if auc.get("value") is not None:
        interval = f" (95 % CI {auc['low']:.3f}-{auc['high']:.3f})" if auc.get("low") is not None else ""
        lines.append(f"{'ROC AUC':32s} {auc['value']:.4f}{interval}")
    if metrics.get("average_precision") is not None:
        lines.append(f"{'average precision':32s} {metrics['average_precision']:.4f}")
    lines.append(f"{'Brier score / ECE':32s} {metrics['brier']:.4f} / {metrics['ece']:.4f}")
    return "\n".join(lines)


def format_run_metrics(metrics: dict[str, Any]) -> str:
    """The whole ``metrics.json`` of a run as text: rule, calibration, validation, test, external."""
    lines = [
        f"threshold {metrics['threshold']:.4f} (rule: {metrics['threshold_rule']}"
        + (f", min sensitivity {metrics['min_sensitivity']}" if metrics.get("min_sensitivity") else "")
        + f"; chosen on validation)   temperature {metrics['temperature']:.4f}"
    ]
    calibration = metrics.get("calibration", {})
    for split in ("validation", "test"):
        if split in calibration:
            entry = calibration[split]
            lines.append(
                f"calibration on {split}: ECE {entry['ece_before']:.4f} -> {entry['ece_after']:.4f}, "
                f"Brier {entry['brier_before']:.4f} -> {entry['brier_after']:.4f} (before -> after scaling)"
            )
    for note in metrics.get("notes", []):
        lines.append(f"note: {note}")
    for split in ("validation", "test"):
        if metrics.get(split):
            lines += ["", format_metrics(metrics[split], title=f"== {split} ==")]
    for name, entry in (metrics.get("external") or {}).items():
        lines += ["", format_metrics(entry, title=f"== external validation: {name} ==")]
    return "\n".join(lines)


__all__ = ["format_metrics", "format_run_metrics"]
