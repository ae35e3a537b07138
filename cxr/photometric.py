"""Training-time augmentation of acquisition: photometric changes at random strengths, random resized crops.

Why: Kermany's test images differ from its train images in acquisition and processing (contrast curve,
sharpness, noise, background level; docs/benchmarks.md), so a network should not be able to read the
label from those. These layers live in the ``tf.data`` pipeline only (``cxr.pipeline.build_augmentation``),
never inside a saved model, so they need no registration. Input and output: (n, s, s, 1) float32, 0-255.

- ``RandomPhotometric(strength)``: per image, each at a random strength up to ``strength`` (0-1):
  gamma in exp(±0.55·strength) (0.58-1.73 at 1), blur or sharpen (unsharp mask with an amount in
  ±strength, -1 = a 3x3 Gaussian blur), Gaussian noise of standard deviation up to 8·strength grey levels,
  and a background-level jitter that lifts or lowers the dark pixels (below 64) by up to 16·strength.
- ``RandomResizedCrop(max_removed)``: per image, a crop of ``1 - max_removed`` to all of the area, aspect
  ratio 3/4-4/3, at a random place, resized back to s x s (bilinear).
"""

from __future__ import annotations

from cxr.tensorflow_loader import keras


class RandomPhotometric(keras.layers.Layer):
    """Gamma, blur/sharpen, noise and background jitter at random strengths (see the module docstring)."""

    def __init__(self, strength: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < float(strength) <= 1.0:
            raise ValueError(f"photometric strength must be in (0, 1]; received {strength!r}.")
        self.strength, self.seed = float(strength), seed

    def _uniform(self, shape, low, high, offset: int):
        from cxr.tensorflow_loader import tensorflow as tf

        return tf.random.uniform(shape, low, high, seed=None if self.seed is None else self.seed + offset)

    def call(self, images, training=True):
        from cxr.tensorflow_loader import tensorflow as tf

        if not training:
            return images
        count = tf.shape(images)[0]
        per_image = (count, 1, 1, 1)
        s = self.strength
        x = tf.clip_by_value(images, 0.0, 255.0) / 255.0
        x = tf.pow(x, tf.exp(self._uniform(per_image, -0.55 * s, 0.55 * s, 0)))
        kernel = tf.constant([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0
        blurred = tf.nn.depthwise_conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC"),
                                         tf.reshape(kernel, (3, 3, 1, 1)), strides=(1, 1, 1, 1), padding="VALID")
        x = x + self._uniform(per_image, -s, s, 1) * (x - blurred)
        x = x * 255.0
        dark = tf.maximum(0.0, 1.0 - x / 64.0)
        x = x + self._uniform(per_image, -16.0 * s, 16.0 * s, 2) * dark
        x = x + tf.random.normal(tf.shape(x), seed=None if self.seed is None else self.seed + 3) * \
            self._uniform(per_image, 0.0, 8.0 * s, 4)
        return tf.clip_by_value(x, 0.0, 255.0)

    def compute_output_shape(self, input_shape):
        return input_shape


class RandomResizedCrop(keras.layers.Layer):
    """A random crop of ``1 - max_removed`` to 100 % of the area, resized back (see the module docstring)."""

    def __init__(self, max_removed: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < float(max_removed) < 1.0:
            raise ValueError(f"random crop must remove a fraction in (0, 1) of the area; received {max_removed!r}.")
        self.max_removed, self.seed = float(max_removed), seed

    def call(self, images, training=True):
        from cxr.tensorflow_loader import tensorflow as tf

        if not training:
            return images
        count = tf.shape(images)[0]
        seed = None if self.seed is None else self.seed
        area = tf.random.uniform((count,), 1.0 - self.max_removed, 1.0, seed=seed)
        log_ratio = tf.random.uniform((count,), tf.math.log(3 / 4), tf.math.log(4 / 3),
                                      seed=None if seed is None else seed + 1)
        ratio = tf.exp(log_ratio)
        height = tf.minimum(1.0, tf.sqrt(area / ratio))
        width = tf.minimum(1.0, tf.sqrt(area * ratio))
        top = tf.random.uniform((count,), seed=None if seed is None else seed + 2) * (1.0 - height)
        left = tf.random.uniform((count,), seed=None if seed is None else seed + 3) * (1.0 - width)
        boxes = tf.stack([top, left, top + height, left + width], axis=1)
        static = images.shape[1:3]
        size = tuple(int(side) for side in static) if static.is_fully_defined() else tf.shape(images)[1:3]
        cropped = tf.image.crop_and_resize(images, boxes, tf.range(count), size)
        return tf.ensure_shape(cropped, images.shape)  # the model after it needs the static size

    def compute_output_shape(self, input_shape):
        return input_shape
