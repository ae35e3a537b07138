"""cxr.charts: the frames behind the charts (hand-computed cases) and the charts' Vega-Lite specs."""

import numpy as np
import pandas as pd
import pytest

from cxr import charts


def chart_values(chart) -> list[dict]:
    """Every data row embedded in a chart's Vega-Lite spec (all layers)."""
    spec = chart.to_dict()
    rows = []
    for values in spec.get("datasets", {}).values():
        rows.extend(values)
    return rows


def test_intensity_frame_hand_computed():
    # Two 1x2 images: normal = [0, 255], pneumonia = [255, 255]; two bins [0, 128) and [128, 256).
    images = np.array([[[0, 255]], [[255, 255]]], dtype=np.uint8)
    frame = charts.intensity_frame(images, np.array([0, 1]), bins=2)
    normal = frame[frame["class"] == "normal"]["fraction"].tolist()
    pneumonia = frame[frame["class"] == "pneumonia"]["fraction"].tolist()
    assert normal == [0.5, 0.5]
    assert pneumonia == [0.0, 1.0]
    assert frame["intensity"].tolist()[:2] == [0.0, 128.0]


def test_intensity_frame_refuses_float_images_and_mismatched_labels():
    with pytest.raises(ValueError, match="uint8"):
        charts.intensity_frame(np.zeros((2, 4, 4), dtype=np.float64), np.array([0, 1]))
    with pytest.raises(ValueError, match="one label per image"):
        charts.intensity_frame(np.zeros((2, 4, 4), dtype=np.uint8), np.array([0, 1, 1]))


def test_history_long_pairs_train_and_validation():
    history = pd.DataFrame({"epoch": [1, 2], "loss": [0.9, 0.5], "val_loss": [1.0, np.nan]})
    long = charts.history_long(history, "loss")
    assert sorted(zip(long["epoch"], long["split"], long["value"], strict=True)) == [
        (1, "train", 0.9), (1, "validation", 1.0), (2, "train", 0.5)]
    with pytest.raises(ValueError, match="no column 'auc'"):
        charts.history_long(history, "auc")


def test_compare_runs_frame_skips_runs_without_the_metric():
    histories = {"a": pd.DataFrame({"epoch": [1], "auc": [0.7], "val_auc": [0.6]}),
                 "b": pd.DataFrame({"epoch": [1], "loss": [0.3]}),
                 "c": pd.DataFrame()}
    frame = charts.compare_runs_frame(histories, "auc")
    assert set(frame["run"]) == {"a"}
    assert len(frame) == 2
    assert charts.compare_runs_frame({}, "auc").empty


def test_class_balance_chart_labels_counts_and_percentages():
    counts = pd.DataFrame({"split": ["train", "train"], "class": ["normal", "pneumonia"], "count": [1341, 3875],
                           "percent": [25.7, 74.3]})
    rows = chart_values(charts.class_balance_chart(counts))
    assert {"1,341 (26 %)", "3,875 (74 %)"} <= {row["label"] for row in rows}
    with pytest.raises(ValueError, match="percent"):
        charts.class_balance_chart(counts.drop(columns="percent"))


def test_confusion_matrix_chart_cells_and_row_shares():
    rows = chart_values(charts.confusion_matrix_chart([[8, 2], [1, 9]]))
    cell = {(row["true"], row["predicted"]): row for row in rows}
    assert cell[("normal", "normal")]["count"] == 8
    assert cell[("normal", "pneumonia")]["share"] == pytest.approx(0.2)
    assert cell[("pneumonia", "normal")]["share"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        charts.confusion_matrix_chart(np.zeros((3, 3)))


def test_roc_chart_marks_each_threshold_point():
    chart = charts.roc_chart([0.0, 0.5, 1.0], [0.0, 0.8, 1.0], auc=0.9,
                             points={"saved 0.50": (0.5, 0.8), "slider 0.70": (0.2, 0.6)})
    rows = chart_values(chart)
    assert {row["point"] for row in rows if "point" in row} == {"saved 0.50", "slider 0.70"}
    assert "AUC 0.900" in chart.to_dict()["title"]
    with pytest.raises(ValueError, match="equal-length"):
        charts.roc_chart([0.0, 1.0], [0.0])


def test_history_and_learning_rate_charts_fix_the_epoch_axis():
    history = pd.DataFrame({"epoch": [1, 2], "accuracy": [0.6, 0.7], "val_accuracy": [0.5, 0.8],
                            "learning_rate": [1e-3, 3e-4]})
    spec = charts.history_chart(history, "accuracy", epochs=12).to_dict()
    assert spec["encoding"]["x"]["scale"]["domain"] == [1, 12]
    spec = charts.learning_rate_chart(history, epochs=12).to_dict()
    assert spec["encoding"]["y"]["scale"]["type"] == "log"
    # A factor of 2 around the rates, so a constant rate sits mid-axis instead of in decades of empty grid.
    assert spec["encoding"]["y"]["scale"]["domain"] == pytest.approx([1.5e-4, 2e-3])


def test_calibration_and_size_charts_build():
    rows = chart_values(charts.calibration_chart([0.1, 0.9], [0.2, 0.8], counts=[5, 7]))
    assert {row.get("images") for row in rows if "predicted" in row} >= {5, 7}
    manifest = pd.DataFrame({"width": [400, 1000], "height": [300, 900]})
    rows = chart_values(charts.image_size_chart(manifest))
    assert sorted(row["pixels"] for row in rows) == [300, 400, 900, 1000]


def test_size_chart_draws_a_bar_per_size_when_sizes_are_few():
    # Every image 28 x 28 (a MedMNIST set): a histogram made one solid block of a zero-width bin.
    same = charts.image_size_chart(pd.DataFrame({"width": [28] * 50, "height": [28] * 50})).to_dict()
    assert same["encoding"]["x"]["type"] == "ordinal" and "bin" not in same["encoding"]["x"]
    assert same["encoding"]["xOffset"]["field"] == "dimension"
    many = pd.DataFrame({"width": np.arange(400, 1400, 10), "height": np.arange(300, 1300, 10)})
    assert charts.image_size_chart(many).to_dict()["encoding"]["x"]["bin"] == {"maxbins": 40}


def test_run_comparison_legend_tells_train_from_validation_and_history_legends_sit_above():
    history = pd.DataFrame({"epoch": [1, 2], "auc": [0.6, 0.7], "val_auc": [0.5, 0.8]})
    spec = charts.compare_runs_chart({"run a": history, "run b": history}, "auc").to_dict()
    dashed = [layer for layer in spec["layer"] if "strokeDash" in layer.get("encoding", {})]
    # The dashes live on a line layer without points (points made the legend draw dots, which show no dash).
    assert len(dashed) == 1 and dashed[0]["mark"]["type"] == "line" and not dashed[0]["mark"].get("point")
    legend = dashed[0]["encoding"]["strokeDash"]["legend"]
    assert legend["symbolType"] == "stroke" and "dashed" in legend["labelExpr"] and "solid" in legend["labelExpr"]
    # A legend beside one chart and not the other made the learning-rate chart wider than its neighbours.
    assert charts.history_chart(history, "auc").to_dict()["encoding"]["color"]["legend"]["orient"] == "top"


def test_batch_chart_fixes_the_batch_axis():
    batches = pd.DataFrame({"batch": [1, 2, 3], "loss": [0.9, 0.8, 0.75]})
    spec = charts.batch_chart(batches, "loss", batches_per_epoch=163).to_dict()
    assert spec["encoding"]["x"]["scale"]["domain"] == [1, 163]
    assert [row["loss"] for row in chart_values(charts.batch_chart(batches))] == [0.9, 0.8, 0.75]
