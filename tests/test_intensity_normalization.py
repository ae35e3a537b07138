"""Per-image intensity normalisation (cxr/layers.py) and the "fast_norm" model (cxr/models.py).

The layer must do what its numpy twin in benchmarks/shortcut_probe.py does (the evidence in
docs/benchmarks.md was measured with the twin), cancel any exposure/contrast change of an image, and a
model holding it must load through ``cxr.model_files.load_model_file`` (safe mode) in a fresh process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cxr import models

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from shortcut_probe import equalise, percentile_stretch  # noqa: E402


def _images(count: int = 3, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(7)
    images = rng.integers(20, 200, size=(count, size, size)).astype(np.uint8)
    images[:, :4] = 5  # a dark border, as in real X-rays
    return images


def _layer(mode: str):
    from cxr.layers import IntensityNormalization

    return IntensityNormalization(mode)


@pytest.mark.parametrize(("mode", "twin"), [("percentile", percentile_stretch), ("equalise", equalise)])
def test_layer_matches_its_numpy_twin(mode, twin):
    images = _images()
    out = np.asarray(_layer(mode)(images[..., None].astype("float32")))[..., 0]
    np.testing.assert_allclose(out, twin(images), atol=1e-3)


def test_percentile_stretch_cancels_exposure_and_contrast():
    images = _images().astype("float32")
    changed = np.clip(images * 0.6 + 40.0, 0, 255)  # a darker-contrast, brighter exposure of the same images
    layer = _layer("percentile")
    original = np.asarray(layer(images[..., None]))
    np.testing.assert_allclose(np.asarray(layer(changed[..., None])), original, atol=1e-2)
    assert original.min() == 0.0 and original.max() == 255.0
    # Without the layer the two differ a lot: the test would catch a layer that did nothing.
    assert np.abs(changed - images).mean() > 20


def test_bad_mode_or_percentiles_are_refused():
    from cxr.layers import IntensityNormalization

    with pytest.raises(ValueError, match="mode must be one of"):
        IntensityNormalization("clahe")
    with pytest.raises(ValueError, match="low < high"):
        IntensityNormalization("percentile", low=99, high=1)


def test_fast_norm_loads_in_safe_mode_in_a_fresh_process_and_ensembles(tmp_path):
    model = models.build_model("fast_norm", (32, 32, 1))
    images = _images(4)[..., None]
    path = tmp_path / "model.keras"
    model.save(path)
    expected = model.predict(images, verbose=0)
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np; from cxr.model_files import load_model_file; "
        f"m = load_model_file({str(path)!r}); "
        f"print(np.abs(m.predict(np.load({str(tmp_path / 'images.npy')!r}), verbose=0) - "
        f"np.array({expected.tolist()!r})).max())"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.strip().splitlines()[-1]) < 1e-5
    # The ensemble keeps the members' normalisation; mixing normalised and plain members is refused.
    ensemble = models.average_fast_models([model, models.build_model("fast_norm", (32, 32, 1))])
    assert ensemble.get_layer(models.NORMALIZATION_LAYER).mode == "percentile"
    with pytest.raises(models.CxrError, match="same intensity normalisation"):
        models.average_fast_models([model, models.build_model("fast", (32, 32, 1))])
