"""Custom Keras layers that a saved ``model.keras`` may hold, registered so that ``safe_mode`` loads them.

Importing this module imports Keras (it is imported lazily by ``cxr.models.register_layers``, which the
model loaders call first). A registered class is found by its name, ``"cxr>IntensityNormalization"``;
``safe_mode`` refuses only code stored in the file (a ``Lambda``), never a registered class.

- ``IntensityNormalization``: a fixed per-image intensity normalisation at the start of a network, so
  exposure, contrast and background level, which differ between X-ray machines and hospitals, reach the
  convolutions already normalised. ``mode="percentile"`` stretches each image's ``low``-``high``
  percentile range to 0-255 (linear interpolation between order statistics, as ``numpy.percentile``);
  ``mode="equalise"`` replaces every pixel by 255 x the fraction of the image's pixels at or below it
  (histogram equalisation; its gradient with respect to the image is zero, so image-gradient
  explanations see nothing through it). Input and output: (n, h, w, 1) float32, 0-255.
"""

from __future__ import annotations

import keras
from keras import ops

MODES = ("percentile", "equalise")


@keras.saving.register_keras_serializable(package="cxr")
class IntensityNormalization(keras.layers.Layer):
    """Per-image intensity normalisation, no weights. See the module docstring."""

    def __init__(self, mode: str = "percentile", low: float = 1.0, high: float = 99.0, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; received {mode!r}.")
        if not 0.0 <= float(low) < float(high) <= 100.0:
            raise ValueError(f"need 0 <= low < high <= 100 (percentiles); received low={low!r}, high={high!r}.")
        self.mode, self.low, self.high = mode, float(low), float(high)

    def _percentile(self, ordered, fraction: float):
        """Row-wise percentile of ``ordered`` (n, N), sorted ascending: numpy's linear interpolation."""
        count = int(ordered.shape[-1])
        position = fraction * (count - 1)
        below = int(position // 1)
        above = min(below + 1, count - 1)
        weight = position - below
        return ordered[:, below:below + 1] * (1.0 - weight) + ordered[:, above:above + 1] * weight

    def call(self, inputs):
        import tensorflow as tf

        shape = ops.shape(inputs)
        pixels = 1
        for size in inputs.shape[1:]:  # static: the percentile positions are fixed at graph-building time
            pixels *= int(size)
        flat = ops.reshape(ops.cast(inputs, "float32"), (-1, pixels))
        if self.mode == "percentile":
            ordered = ops.sort(flat, axis=-1)
            lows = self._percentile(ordered, self.low / 100.0)
            highs = self._percentile(ordered, self.high / 100.0)
            stretched = (flat - lows) / ops.maximum(highs - lows, 1.0) * 255.0
            return ops.reshape(ops.clip(stretched, 0.0, 255.0), shape)
        levels = tf.cast(tf.clip_by_value(tf.round(flat), 0.0, 255.0), tf.int32)
        counts = tf.math.bincount(levels, minlength=256, maxlength=256, axis=-1, dtype=tf.float32)
        cdf = tf.cumsum(counts, axis=-1) / float(pixels)
        equalised = tf.gather(cdf, levels, batch_dims=1) * 255.0
        return tf.reshape(equalised, shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "low": self.low, "high": self.high}
