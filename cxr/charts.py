"""Altair chart builders for the app and the notebooks: data in, chart out, nothing drawn or stored.

Each builder takes a DataFrame (or arrays) in the shape its docstring gives and returns an Altair
chart; the page decides where to draw it. A few pure helpers turn arrays into the long-format frames
the charts want (Altair plots one row per mark). Altair is imported lazily so that ``import cxr.charts``
stays cheap for code that only needs the frame helpers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxr.config import CLASS_NAMES

# One colour per class everywhere (blue = normal, orange = pneumonia), and one per split of a history.
CLASS_COLORS = ("#1f77b4", "#ff7f0e")
SPLIT_COLORS = {"train": "#1f77b4", "validation": "#d62728"}
POINT_COLORS = ("#d62728", "#2ca02c", "#9467bd")  # threshold markers on ROC/PR curves
# History columns that have a validation twin named ``val_<metric>``.
HISTORY_METRICS = ("loss", "accuracy", "auc")
FEW_SIZES = 8  # up to this many distinct widths/heights get a bar each instead of a histogram
METRIC_TITLES = {"loss": "Loss (binary cross-entropy)", "accuracy": "Accuracy", "auc": "ROC AUC",
                 "learning_rate": "Learning rate"}


def _altair():
    import altair as alt

    return alt


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{what} needs a pandas DataFrame; received {type(frame).__name__}.")
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{what} needs the columns {list(columns)}; the frame given lacks {missing} "
                         f"(it has {list(frame.columns)}).")


# ----------------------------------------------------------------------------------------------------
# Data set charts


def class_balance_chart(counts: pd.DataFrame):
    """Grouped bars of images per class for each split, labelled "count (percent %)".

    ``counts``: one row per (split, class) with columns ``split``, ``class``, ``count`` and ``percent``
    (0-100, the share of the class within its split), as ``Dataset.class_counts()`` returns.
    """
    alt = _altair()
    _require_columns(counts, ("split", "class", "count", "percent"), "class_balance_chart")
    frame = counts.copy()
    frame["label"] = [f"{int(count):,} ({percent:.0f} %)" for count, percent
                      in zip(frame["count"], frame["percent"], strict=True)]
    split_order = [split for split in ("train", "val", "test") if split in set(frame["split"])]
    split_order += sorted(set(frame["split"]) - set(split_order))
    color = alt.Color("class:N", title="Class",
                      scale=alt.Scale(domain=list(CLASS_NAMES), range=list(CLASS_COLORS)))
    base = alt.Chart(frame).encode(
        x=alt.X("split:N", title="Split", sort=split_order, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("class:N", sort=list(CLASS_NAMES)),
        y=alt.Y("count:Q", title="Images"),
    )
    bars = base.mark_bar().encode(
        color=color,
        tooltip=[alt.Tooltip("split:N"), alt.Tooltip("class:N"), alt.Tooltip("count:Q", format=","),
                 alt.Tooltip("percent:Q", format=".1f", title="percent of split")],
    )
    labels = base.mark_text(dy=-6, fontSize=11).encode(text="label:N")
    return (bars + labels).properties(title="Images per class and split", height=300)


def image_size_chart(manifest: pd.DataFrame):
    """Histograms of the original widths and heights (pixels) of the imported images.

    ``manifest``: one row per image with integer columns ``width`` and ``height``.
    """
    alt = _altair()
    _require_columns(manifest, ("width", "height"), "image_size_chart")
    long = manifest[["width", "height"]].melt(var_name="dimension", value_name="pixels")
    if long["pixels"].nunique() <= FEW_SIZES:
        # Few distinct sizes (often one: every image of a MedMNIST set or a resized folder shares it): a
        # histogram would stretch one zero-width bin into a solid block; a bar per size reads at a glance.
        return alt.Chart(long).mark_bar(size=28).encode(
            x=alt.X("pixels:O", title="Original size (pixels)", axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("dimension:N"),
            y=alt.Y("count():Q", title="Images"),
            color=alt.Color("dimension:N", title="Dimension"),
            tooltip=[alt.Tooltip("dimension:N"), alt.Tooltip("pixels:O", title="pixels"),
                     alt.Tooltip("count():Q", title="images")],
        ).properties(title="Original image sizes", height=250)
    return alt.Chart(long).mark_bar(opacity=0.6).encode(
        x=alt.X("pixels:Q", bin=alt.Bin(maxbins=40), title="Original size (pixels)"),
        y=alt.Y("count():Q", title="Images", stack=None),
        color=alt.Color("dimension:N", title="Dimension"),
        tooltip=[alt.Tooltip("dimension:N"), alt.Tooltip("count():Q", title="images")],
    ).properties(title="Original image sizes", height=250)


def intensity_frame(images: np.ndarray, labels: np.ndarray, *, bins: int = 32) -> pd.DataFrame:
    """Per-class histogram of pixel intensities, normalized to a fraction of the class's pixels.

    ``images``: (n, h, w) uint8; ``labels``: (n,) ints in {0, 1}. Returns columns ``class``,
    ``intensity`` (left edge of the bin, 0-255), ``fraction`` (0-1, sums to 1 per class).
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"intensity_frame needs (n, h, w) uint8 images; received {images.dtype} array of "
                         f"shape {images.shape}.")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"intensity_frame needs one label per image: {images.shape[0]} images but labels "
                         f"of shape {labels.shape}.")
    if not 1 <= bins <= 256:
        raise ValueError(f"bins must be from 1 to 256; received {bins!r}.")
    edges = np.linspace(0, 256, bins + 1)
    rows = []
    for label, name in enumerate(CLASS_NAMES):
        selected = images[labels == label]
        if selected.size == 0:
            continue
        counts, _ = np.histogram(selected, bins=edges)
        fractions = counts / counts.sum()
        rows.append(pd.DataFrame({"class": name, "intensity": edges[:-1], "fraction": fractions}))
    if not rows:
        return pd.DataFrame({"class": pd.Series(dtype=str), "intensity": pd.Series(dtype=float),
                             "fraction": pd.Series(dtype=float)})
    return pd.concat(rows, ignore_index=True)


def intensity_chart(frame: pd.DataFrame):
    """Lines of the per-class intensity distribution from :func:`intensity_frame`."""
    alt = _altair()
    _require_columns(frame, ("class", "intensity", "fraction"), "intensity_chart")
    return alt.Chart(frame).mark_line(interpolate="step-after").encode(
        x=alt.X("intensity:Q", title="Pixel intensity (0 = black, 255 = white)", scale=alt.Scale(domain=[0, 256])),
        y=alt.Y("fraction:Q", title="Fraction of pixels", axis=alt.Axis(format="%")),
        color=alt.Color("class:N", title="Class",
                        scale=alt.Scale(domain=list(CLASS_NAMES), range=list(CLASS_COLORS))),
        tooltip=["class:N", "intensity:Q", alt.Tooltip("fraction:Q", format=".2%")],
    ).properties(title="Pixel intensities per class", height=250)


# ----------------------------------------------------------------------------------------------------
# Training history charts


def history_long(history: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (epoch, split) for ``metric`` from a run's history.

    ``history``: one row per epoch with column ``epoch`` and ``metric`` (train) and optionally
    ``val_<metric>`` (validation), as ``cxr.runs.read_history`` returns. Returns columns ``epoch``,
    ``split`` ("train" or "validation") and ``value``, without missing values.
    """
    _require_columns(history, ("epoch",), "history_long")
    columns = {"train": metric, "validation": f"val_{metric}"}
    present = {split: column for split, column in columns.items() if column in history.columns}
    if not present:
        raise ValueError(f"The history has no column {metric!r} nor {'val_' + metric!r}; it has "
                         f"{list(history.columns)}.")
    parts = [pd.DataFrame({"epoch": history["epoch"].to_numpy(), "split": split,
                           "value": pd.to_numeric(history[column], errors="coerce").to_numpy()})
             for split, column in present.items()]
    long = pd.concat(parts, ignore_index=True)
    return long.dropna(subset=["value"]).reset_index(drop=True)


def history_chart(history: pd.DataFrame, metric: str, *, epochs: int | None = None):
    """Train and validation curves of ``metric`` per epoch (points as well, so one epoch shows).

    ``epochs``: fix the x axis to 1..epochs so the chart grows into its frame during training.
    """
    alt = _altair()
    long = history_long(history, metric)
    x_scale = alt.Scale(domain=[1, max(int(epochs), 2)]) if epochs else alt.Undefined
    return alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("epoch:Q", title="Epoch", scale=x_scale, axis=alt.Axis(tickMinStep=1, format="d")),
        # No axis title: the chart's title names the metric, and a long axis title was cut at a phone's width.
        y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False), axis=alt.Axis(format="~g")),
        # The legend above the plot, not beside it: the plot then spans the chart's width, as the
        # learning-rate chart (no legend) does, so charts side by side line up.
        color=alt.Color("split:N", title=None, scale=alt.Scale(domain=list(SPLIT_COLORS),
                                                               range=list(SPLIT_COLORS.values())),
                        legend=alt.Legend(orient="top", symbolType="stroke")),
        tooltip=["epoch:Q", "split:N", alt.Tooltip("value:Q", format=".4f")],
    ).properties(title=METRIC_TITLES.get(metric, metric), height=220)


def learning_rate_chart(history: pd.DataFrame, *, epochs: int | None = None):
    """The learning rate per epoch on a log scale (the plateau schedule divides it in steps)."""
    alt = _altair()
    _require_columns(history, ("epoch", "learning_rate"), "learning_rate_chart")
    frame = history[["epoch", "learning_rate"]].dropna()
    frame = frame[frame["learning_rate"] > 0]  # a log axis has no place for 0
    x_scale = alt.Scale(domain=[1, max(int(epochs), 2)]) if epochs else alt.Undefined
    # A factor of 2 of room around the rates: a constant rate alone made the log axis span decades of empty
    # grid with ticks that did not include the rate itself.
    y_scale = (alt.Scale(type="log", domain=[float(frame["learning_rate"].min()) / 2,
                                             float(frame["learning_rate"].max()) * 2], nice=False)
               if len(frame) else alt.Scale(type="log"))
    return alt.Chart(frame).mark_line(point=True, interpolate="step-after", color="#555555").encode(
        x=alt.X("epoch:Q", title="Epoch", scale=x_scale, axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("learning_rate:Q", title=None, scale=y_scale, axis=alt.Axis(format="~g", tickCount=4)),
        tooltip=["epoch:Q", alt.Tooltip("learning_rate:Q", format=".2e")],
    ).properties(title=METRIC_TITLES["learning_rate"], height=220)


def compare_runs_frame(histories: Mapping[str, pd.DataFrame], metric: str) -> pd.DataFrame:
    """Long frame of ``metric`` for several runs: columns ``run``, ``epoch``, ``split``, ``value``."""
    parts = []
    for run_id, history in histories.items():
        if history is None or len(history) == 0:
            continue
        try:
            long = history_long(history, metric)
        except ValueError:
            continue  # a run without this metric (an old or failed one) is left out, not fatal
        long.insert(0, "run", str(run_id))
        parts.append(long)
    if not parts:
        return pd.DataFrame({"run": pd.Series(dtype=str), "epoch": pd.Series(dtype=int),
                             "split": pd.Series(dtype=str), "value": pd.Series(dtype=float)})
    return pd.concat(parts, ignore_index=True)


def compare_runs_chart(histories: Mapping[str, pd.DataFrame], metric: str):
    """One colour per run, solid for validation and dashed for train, of ``metric`` per epoch."""
    alt = _altair()
    frame = compare_runs_frame(histories, metric)
    base = alt.Chart(frame).encode(
        x=alt.X("epoch:Q", title="Epoch", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False), axis=alt.Axis(format="~g")),
        color=alt.Color("run:N", title="Run", legend=alt.Legend(orient="bottom", direction="vertical",
                                                                symbolType="stroke", labelLimit=600)),
        tooltip=["run:N", "epoch:Q", "split:N", alt.Tooltip("value:Q", format=".4f")],
    )
    # The dashes on a line layer of their own: with points on the same mark, the legend drew each line style
    # as a point, which shows no dash (an empty legend). Stroke symbols show the pattern, and the labels say
    # it in words too.
    lines = base.mark_line().encode(
        strokeDash=alt.StrokeDash("split:N", title="Line",
                                  scale=alt.Scale(domain=["validation", "train"], range=[[1, 0], [5, 3]]),
                                  legend=alt.Legend(orient="top", symbolType="stroke", symbolStrokeWidth=2,
                                                    symbolSize=400, symbolStrokeColor="#444444",
                                                    labelExpr="datum.label == 'train' ? 'train (dashed)' : "
                                                              "'validation (solid)'")))
    points = base.mark_point(filled=True, size=30)
    return alt.layer(lines, points).properties(title=f"{METRIC_TITLES.get(metric, metric)}: run comparison",
                                               height=320)


# ----------------------------------------------------------------------------------------------------
# Evaluation charts


def confusion_matrix_chart(matrix: Any, *, class_names: Sequence[str] = CLASS_NAMES, title: str | None = None,
                           select: str | None = None):
    """Heat map of a confusion matrix with the count and the row percentage in each cell.

    ``matrix``: (k, k) counts, rows = true class, columns = predicted class (scikit-learn's layout).
    ``select``: name of a point selection on the cells (fields ``true`` and ``predicted``), so a click on a
    cell can be read back (Streamlit's ``on_select``).
    """
    alt = _altair()
    matrix = np.asarray(matrix)
    k = len(class_names)
    if matrix.shape != (k, k):
        raise ValueError(f"confusion_matrix_chart needs a ({k}, {k}) matrix for classes {list(class_names)}; "
                         f"received shape {matrix.shape}.")
    row_totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        row_share = np.where(row_totals > 0, matrix / np.maximum(row_totals, 1), 0.0)
    rows = [{"true": class_names[i], "predicted": class_names[j], "count": int(matrix[i, j]),
             "share": float(row_share[i, j]), "label": f"{int(matrix[i, j]):,}\n{100 * row_share[i, j]:.0f} %"}
            for i in range(k) for j in range(k)]
    frame = pd.DataFrame(rows)
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", title="Predicted", sort=list(class_names), axis=alt.Axis(labelAngle=0)),
        y=alt.Y("true:N", title="True", sort=list(class_names)),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("share:Q", title="Share of true class", scale=alt.Scale(scheme="blues", domain=[0, 1]),
                        legend=None),
        tooltip=["true:N", "predicted:N", alt.Tooltip("count:Q", format=","),
                 alt.Tooltip("share:Q", format=".1%", title="share of true class")],
    )
    if select:
        cells = cells.add_params(alt.selection_point(name=select, fields=["true", "predicted"]))
    text = base.mark_text(fontSize=16, lineBreak="\n").encode(
        text="label:N",
        color=alt.condition(alt.datum.share > 0.5, alt.value("white"), alt.value("black")),
    )
    return (cells + text).properties(title=title or "Confusion matrix", width=300, height=300)


def _paired(x: Any, y: Any, chart: str) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as flat float arrays; ``ValueError`` naming ``chart`` unless equally long and non-empty."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"{chart} needs two equal-length, non-empty arrays; received lengths {x.size} and "
                         f"{y.size}.")
    return x, y


def _curve_chart(x: Any, y: Any, *, x_title: str, y_title: str, title: str, diagonal: bool,
                 points: Mapping[str, tuple[float, float]] | None):
    alt = _altair()
    x, y = _paired(x, y, title)
    # order keeps the curve drawn in the order the points were computed (PR curves turn back on x).
    frame = pd.DataFrame({"x": x, "y": y, "order": np.arange(x.size)})
    axes = dict(x=alt.X("x:Q", title=x_title, scale=alt.Scale(domain=[0, 1])),
                y=alt.Y("y:Q", title=y_title, scale=alt.Scale(domain=[0, 1])))
    layers = [alt.Chart(frame).mark_line(color="#1f5fa8").encode(
        order="order:Q", tooltip=[alt.Tooltip("x:Q", title=x_title, format=".3f"),
                                  alt.Tooltip("y:Q", title=y_title, format=".3f")], **axes)]
    if diagonal:
        reference = pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]})
        layers.append(alt.Chart(reference).mark_line(color="#999999", strokeDash=[4, 4]).encode(**axes))
    if points:
        markers = pd.DataFrame({"x": [float(xy[0]) for xy in points.values()],
                                "y": [float(xy[1]) for xy in points.values()], "point": list(points)})
        layers.append(alt.Chart(markers).mark_point(size=140, filled=True).encode(
            color=alt.Color("point:N", title="", scale=alt.Scale(range=list(POINT_COLORS))),
            shape=alt.Shape("point:N", title=""),
            tooltip=["point:N", alt.Tooltip("x:Q", title=x_title, format=".3f"),
                     alt.Tooltip("y:Q", title=y_title, format=".3f")], **axes))
    return alt.layer(*layers).properties(title=title, height=320)


def roc_chart(false_positive_rate: Any, true_positive_rate: Any, *, auc: float | None = None,
              points: Mapping[str, tuple[float, float]] | None = None):
    """ROC curve (x = 1 - specificity, y = sensitivity) with the chance diagonal.

    ``points``: label -> (false positive rate, true positive rate), e.g. the saved threshold and the one
    on a slider, each drawn as a marker.
    """
    title = "ROC curve" + (f" (AUC {auc:.3f})" if auc is not None else "")
    return _curve_chart(false_positive_rate, true_positive_rate, x_title="False positive rate (1 - specificity)",
                        y_title="True positive rate (sensitivity)", title=title, diagonal=True, points=points)


def precision_recall_chart(recall: Any, precision: Any, *, average_precision: float | None = None,
                           points: Mapping[str, tuple[float, float]] | None = None):
    """Precision-recall curve; ``points``: label -> (recall, precision) of a threshold."""
    title = "Precision-recall curve" + (f" (AP {average_precision:.3f})" if average_precision is not None else "")
    return _curve_chart(recall, precision, x_title="Recall (sensitivity)", y_title="Precision", title=title,
                        diagonal=False, points=points)


def calibration_chart(mean_predicted: Any, fraction_positive: Any, *, counts: Any | None = None):
    """Reliability diagram: observed fraction of pneumonia against mean predicted probability per bin.

    ``mean_predicted``, ``fraction_positive``: (bins,) in [0, 1]; ``counts``: (bins,) images per bin
    (sets the point size, so a bin of three images does not look as sure as one of three hundred).
    """
    alt = _altair()
    mean_predicted, fraction_positive = _paired(mean_predicted, fraction_positive, "calibration_chart")
    frame = pd.DataFrame({"predicted": mean_predicted, "observed": fraction_positive})
    frame["images"] = np.asarray(counts, dtype=int).ravel() if counts is not None else 1
    axes = dict(x=alt.X("predicted:Q", title="Mean predicted P(pneumonia)", scale=alt.Scale(domain=[0, 1])),
                y=alt.Y("observed:Q", title="Observed fraction with pneumonia", scale=alt.Scale(domain=[0, 1])))
    reference = pd.DataFrame({"predicted": [0.0, 1.0], "observed": [0.0, 1.0]})
    diagonal = alt.Chart(reference).mark_line(color="#999999", strokeDash=[4, 4]).encode(**axes)
    tooltip = [alt.Tooltip("predicted:Q", format=".3f"), alt.Tooltip("observed:Q", format=".3f"), "images:Q"]
    curve = alt.Chart(frame).mark_line(color="#1f5fa8").encode(tooltip=tooltip, **axes)
    points = alt.Chart(frame).mark_circle(color="#1f5fa8", opacity=0.8).encode(
        size=alt.Size("images:Q", title="Images", legend=None, scale=alt.Scale(range=[30, 400]))
        if counts is not None else alt.value(60),
        tooltip=tooltip, **axes)
    return (diagonal + curve + points).properties(title="Calibration (reliability diagram)", height=320)


__all__ = [
    "class_balance_chart", "image_size_chart", "intensity_frame", "intensity_chart", "history_long",
    "history_chart", "learning_rate_chart", "compare_runs_frame", "compare_runs_chart",
    "confusion_matrix_chart", "roc_chart", "precision_recall_chart", "calibration_chart",
]


def batch_chart(batches: pd.DataFrame, metric: str = "loss", *, batches_per_epoch: int | None = None):
    """``metric`` batch by batch within one epoch (Keras' running mean over the epoch so far).

    ``batches``: rows of ``cxr.live_progress.read_batch_log(run, epoch=…)`` (columns ``batch`` and
    ``metric``). ``batches_per_epoch`` fixes the x axis so the line grows into its frame.
    """
    alt = _altair()
    _require_columns(batches, ("batch", metric), "batch_chart")
    frame = batches[["batch", metric]].dropna()
    x_scale = alt.Scale(domain=[1, max(int(batches_per_epoch), 2)]) if batches_per_epoch else alt.Undefined
    # Short: the title must fit a phone's width (the long loss name was cut at 390 px).
    title = f"{metric.capitalize() if metric in ('loss', 'accuracy') else metric}: this epoch, batch by batch"
    # Points while they are few: one or two batches would otherwise draw nothing visible.
    return alt.Chart(frame).mark_line(color=SPLIT_COLORS["train"], point=len(frame) <= 30).encode(
        x=alt.X("batch:Q", title="Batch", scale=x_scale, axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y(f"{metric}:Q", title="mean so far", scale=alt.Scale(zero=False), axis=alt.Axis(format="~g")),
        tooltip=["batch:Q", alt.Tooltip(f"{metric}:Q", format=".4f")],
    ).properties(title=title, height=220)
