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

from cxr.tensorflow_loader import keras

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

    @staticmethod
    def _percentile(ordered, fraction: float):
        """Row-wise percentile of ``ordered`` (n, N), sorted ascending: numpy's linear interpolation.
        N may be unknown until run time (an augmentation pipeline can lose the static shape)."""
        from cxr.tensorflow_loader import tensorflow as tf

        count = tf.shape(ordered)[-1]
        position = fraction * tf.cast(count - 1, tf.float32)
        below = tf.cast(tf.floor(position), tf.int32)
        above = tf.minimum(below + 1, count - 1)
        weight = position - tf.cast(below, tf.float32)
        return ordered[:, below:below + 1] * (1.0 - weight) + ordered[:, above:above + 1] * weight

    def call(self, inputs):
        from cxr.tensorflow_loader import tensorflow as tf

        shape = tf.shape(inputs)
        flat = tf.reshape(tf.cast(inputs, tf.float32), (shape[0], shape[1] * shape[2] * shape[3]))
        if self.mode == "percentile":
            ordered = tf.sort(flat, axis=-1)
            lows = self._percentile(ordered, self.low / 100.0)
            highs = self._percentile(ordered, self.high / 100.0)
            stretched = (flat - lows) / tf.maximum(highs - lows, 1.0) * 255.0
            return tf.reshape(tf.clip_by_value(stretched, 0.0, 255.0), shape)
        levels = tf.cast(tf.clip_by_value(tf.round(flat), 0.0, 255.0), tf.int32)
        counts = tf.math.bincount(levels, minlength=256, maxlength=256, axis=-1, dtype=tf.float32)
        cdf = tf.cumsum(counts, axis=-1) / tf.cast(tf.shape(flat)[-1], tf.float32)
        equalised = tf.gather(cdf, levels, batch_dims=1) * 255.0
        return tf.reshape(equalised, shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "low": self.low, "high": self.high}
