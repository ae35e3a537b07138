"""Explanations of one prediction: Grad-CAM and SHAP (GradientExplainer) heat maps, and overlays.

- Grad-CAM (Selvaraju et al., 2017): the last convolutional feature maps weighted by the mean gradient
  of the output with respect to each map, kept where positive, upsampled to the image. Cheap: one
  forward and one backward pass (tens of milliseconds on a CPU at 150 px).
- SHAP GradientExplainer (Lundberg and Lee, 2017; "expected gradients"): gradients at random points
  between the image and images of a background sample from the training data, times the difference
  to them. The attributions of all pixels add up approximately to ``f(image) - mean f(background)``.
  Hundreds of gradient evaluations per image: seconds, not milliseconds.

All models of ``cxr.models`` take raw 0-255 pixels ``(n, s, s, 1)``; images here are ``(s, s)`` uint8.
TensorFlow, Keras, OpenCV and shap are imported inside the functions.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from cxr.errors import CxrError

# Layers whose 4-D output is not a feature map worth explaining: they only pool, drop, scale or
# reshape what the previous layer computed (pooling would also lower the heat map's resolution).
_PASS_THROUGH_LAYERS = (
    "MaxPooling2D",
    "AveragePooling2D",
    "Dropout",
    "SpatialDropout2D",
    "GaussianNoise",
    "Rescaling",
    "Normalization",
    "InputLayer",
    "ZeroPadding2D",
    "Cropping2D",
    "Concatenate",
    "Resizing",
    "CenterCrop",
    "RandomFlip",
    "RandomRotation",
    "RandomZoom",
    "RandomTranslation",
    "Identity",
)


def _as_batch(image: np.ndarray, size: int | None = None) -> np.ndarray:
    """``(s, s)`` or ``(s, s, 1)`` pixels -> ``(1, s, s, 1)`` float32 0..255 (the models' input)."""
    pixels = np.asarray(image)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim != 2:
        raise CxrError(
            f"An image to explain must be (s, s) grayscale pixels; received shape {pixels.shape}. "
            f"Decode it with cxr.imaging.load_image first."
        )
    if size is not None and pixels.shape != (size, size):
        raise CxrError(
            f"The model takes {size}x{size} images; received {pixels.shape[0]}x{pixels.shape[1]}. "
            f"Resize it with cxr.imaging.resize_square(pixels, {size})."
        )
    return pixels.astype(np.float32)[None, :, :, None]


def _output_shape(layer) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return None


def find_last_conv_layer(model) -> list:
    """The path of layers to the last convolutional feature map, e.g. ``[conv]`` or ``[backbone, conv]``.

    Searches from the output backwards for the last layer with a 4-D output ``(n, h, w, c)`` that is not
    a pure pooling/dropout/scaling layer; a nested model (a transfer backbone) is searched inside.
    Raises ``CxrError`` when the model has no such layer (a dense-only network cannot give a Grad-CAM).
    """
    from cxr.tensorflow_loader import keras

    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            try:
                return [layer, *find_last_conv_layer(layer)]
            except CxrError:
                continue
        shape = _output_shape(layer)
        if shape is None or len(shape) != 4 or type(layer).__name__ in _PASS_THROUGH_LAYERS:
            continue
        return [layer]
    raise CxrError(
        f"Model {model.name!r} has no convolutional layer (no layer with a (n, h, w, c) output), so "
        f"Grad-CAM cannot be computed. Use a convolutional model or the SHAP explanation."
    )


def _target_tensor(model):
    """The model's pre-sigmoid logit when it has one (gradients do not vanish when P saturates)."""
    from cxr.models import LOGIT_LAYER

    try:
        return model.get_layer(LOGIT_LAYER).output, True
    except ValueError:
        return model.outputs[0], False


def _node_tensors(layer) -> tuple[Any, Any]:
    # A nested model used once in the outer graph: the outer tensors that go in and come out of it.
    node = layer._inbound_nodes[0]
    inputs = node.input_tensors
    outputs = node.output_tensors
    return (inputs[0] if len(inputs) == 1 else inputs), (outputs[0] if len(outputs) == 1 else outputs)


class GradCam:
    """Grad-CAM for one Keras model; build once (a few ms), call per image.

    ``GradCam(model)(image) -> (s, s) float32 in [0, 1]``. ``target``: ``"predicted"`` (default: the
    class the model chose, so a normal answer shows what argued for normal), ``"pneumonia"`` or
    ``"normal"``. ``layer_path`` names the explained layer (``"backbone/conv"``).
    """

    def __init__(self, model):
        from cxr.tensorflow_loader import keras

        self.model = model
        path = find_last_conv_layer(model)
        self.layer_path = "/".join(layer.name for layer in path)
        target, self.explains_logit = _target_tensor(model)
        if len(path) == 1:
            self._before = None
            self._inner = keras.Model(model.inputs[0], [path[0].output, target])
            self._after = None
        else:
            # A nested backbone: outer layers before it, the backbone up to its last conv (and its own
            # output), then the outer layers after it. Gradients flow through all three in one tape.
            backbone, *inner_path = path
            if len(inner_path) > 1:
                raise CxrError(f"Grad-CAM supports one level of nesting; layer path {self.layer_path!r} is deeper.")
            outer_in, outer_out = _node_tensors(backbone)
            self._before = keras.Model(model.inputs[0], outer_in)
            self._inner = keras.Model(backbone.inputs[0], [inner_path[0].output, backbone.outputs[0]])
            self._after = keras.Model(outer_out, target)
        self.image_size = int(model.inputs[0].shape[1])

    def __call__(self, image: np.ndarray, *, target: str = "predicted") -> np.ndarray:
        from cxr.tensorflow_loader import tensorflow as tf

        if target not in ("predicted", "pneumonia", "normal"):
            raise CxrError(f"target must be 'predicted', 'pneumonia' or 'normal'; received {target!r}.")
        batch = tf.constant(_as_batch(image, self.image_size))
        with tf.GradientTape() as tape:
            x = batch if self._before is None else self._before(batch, training=False)
            feature_maps, output = self._inner(x, training=False)
            if self._after is not None:
                output = self._after(output, training=False)
            score = tf.reshape(output, [-1])[0]
            # The logit's sign is the prediction; a probability is compared with 0.5.
            predicted_pneumonia = bool(score.numpy() >= (0.0 if self.explains_logit else 0.5))
            sign = 1.0 if target == "pneumonia" or (target == "predicted" and predicted_pneumonia) else -1.0
            score = sign * score
        gradients = tape.gradient(score, feature_maps)
        if gradients is None:
            raise CxrError(
                f"Grad-CAM got no gradient at layer {self.layer_path!r} of model {self.model.name!r}; "
                f"the output does not depend on it."
            )
        weights = tf.reduce_mean(gradients, axis=(1, 2))  # (1, c): importance of each feature map
        cam = tf.nn.relu(tf.reduce_sum(feature_maps * weights[:, None, None, :], axis=-1))[0].numpy()
        return _normalize_and_resize(cam, self.image_size)


def _normalize_and_resize(values: np.ndarray, size: int) -> np.ndarray:
    import cv2

    values = np.asarray(values, dtype=np.float32)
    if values.shape != (size, size):
        values = cv2.resize(values, (size, size), interpolation=cv2.INTER_LINEAR)
    values = np.maximum(values, 0.0)
    peak = float(values.max())
    # An all-zero map (no positive evidence) stays zero rather than amplifying noise.
    return (values / peak if peak > 0 else np.zeros_like(values)).astype(np.float32)


def gradcam(model, image: np.ndarray, *, target: str = "predicted") -> np.ndarray:
    """Grad-CAM heat map of ``image`` ``(s, s)`` uint8 for ``model``: ``(s, s)`` float32 in [0, 1].

    Builds the gradient model on each call; hold a ``GradCam(model)`` to explain many images.
    """
    return GradCam(model)(image, target=target)


# ------------------------------------------------------------------------------------------------- SHAP
def background_sample(images: np.ndarray, *, num_images: int = 32, seed: int = 0) -> np.ndarray:
    """A seeded random sample of training images for SHAP's background: ``(k, s, s)`` uint8, k <= num_images."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.shape[0] == 0:
        raise CxrError(
            f"A SHAP background must be (n, s, s) training images with n >= 1; received shape {images.shape}."
        )
    generator = np.random.default_rng(seed)
    index = generator.choice(images.shape[0], size=min(num_images, images.shape[0]), replace=False)
    return images[np.sort(index)]


class ShapExplainer:
    """SHAP GradientExplainer for one model and background; call per image.

    ``ShapExplainer(model, background)(image) -> (attributions (s, s) float32, seconds)``.
    ``background``: ``(k, s, s)`` uint8 training images (20-50 is the usual compromise of speed and
    noise). ``num_samples``: gradient evaluations per image (shap's ``nsamples``). Attributions are in
    units of P(pneumonia): positive pixels pushed towards pneumonia; they sum approximately to
    ``P(image) - mean P(background)``.
    """

    def __init__(self, model, background: np.ndarray, *, num_samples: int = 200, seed: int = 0):
        import shap

        self.model = model
        self.image_size = int(model.inputs[0].shape[1])
        background = np.asarray(background)
        if background.ndim == 4 and background.shape[-1] == 1:
            background = background[..., 0]
        if (
            background.ndim != 3
            or background.shape[1:] != (self.image_size, self.image_size)
            or background.shape[0] < 1
        ):
            raise CxrError(
                f"The SHAP background must be (k, {self.image_size}, {self.image_size}) images with "
                f"k >= 1; received shape {background.shape}. Use background_sample(train_images)."
            )
        self.background = background.astype(np.float32)[..., None]
        self.num_samples = int(num_samples)
        self.seed = seed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Keras: shap passes inputs as a one-item list
            self._explainer = shap.GradientExplainer(model, self.background)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        batch = _as_batch(image, self.image_size)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            values = self._explainer.shap_values(batch, nsamples=self.num_samples, rseed=self.seed)
        seconds = time.perf_counter() - started
        values = np.asarray(values[0] if isinstance(values, list) else values, dtype=np.float32)
        # (1, s, s, 1[, 1 output]) -> (s, s): sum over the channel (and the single output).
        attributions = values.reshape(values.shape[0], self.image_size, self.image_size, -1).sum(axis=-1)[0]
        return attributions.astype(np.float32), seconds


def shap_map(model, image: np.ndarray, background: np.ndarray, *, num_samples: int = 200, seed: int = 0) -> np.ndarray:
    """SHAP GradientExplainer attributions of ``image`` ``(s, s)`` against ``background`` ``(k, s, s)``.

    Returns ``(s, s)`` float32 attributions in units of P(pneumonia) (signed, not normalised; see
    ``attribution_heatmap`` to show them).
    """
    return ShapExplainer(model, background, num_samples=num_samples, seed=seed)(image)[0]


def attribution_heatmap(attributions: np.ndarray, *, sigma: float = 2.0) -> np.ndarray:
    """Signed pixel attributions -> a displayable ``(s, s)`` float32 map in [0, 1] of the positive part.

    Pixel-level SHAP values are speckled; a small Gaussian blur (``sigma`` pixels) shows regions.
    """
    import cv2

    values = np.asarray(attributions, dtype=np.float32)
    if sigma > 0:
        values = cv2.GaussianBlur(values, (0, 0), sigmaX=float(sigma))
    return _normalize_and_resize(values, values.shape[0])


# ---------------------------------------------------------------------------------------------- overlay
def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The X-ray ``(s, s)`` uint8 with ``heatmap`` ``(h, w)`` in [0, 1] on top: ``(s, s, 3)`` uint8 RGB.

    The heat map is coloured with the jet colour map (blue low, red high) and blended with weight
    ``alpha`` (0 = only the X-ray, 1 = only the colours); it is resized to the image when needed.
    """
    import cv2

    pixels = np.asarray(image)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim != 2:
        raise CxrError(f"overlay expects an (s, s) grayscale image; received shape {pixels.shape}.")
    if not 0.0 <= float(alpha) <= 1.0:
        raise CxrError(f"alpha must be from 0 to 1; received {alpha!r}.")
    pixels = pixels.astype(np.uint8)
    values = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    if values.shape != pixels.shape:
        values = cv2.resize(values, (pixels.shape[1], pixels.shape[0]), interpolation=cv2.INTER_LINEAR)
    colours = cv2.cvtColor(cv2.applyColorMap((values * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    gray = np.repeat(pixels[..., None], 3, axis=-1).astype(np.float32)
    return np.clip((1.0 - alpha) * gray + alpha * colours.astype(np.float32), 0, 255).astype(np.uint8)


__all__ = [
    "GradCam",
    "gradcam",
    "find_last_conv_layer",
    "ShapExplainer",
    "shap_map",
    "background_sample",
    "attribution_heatmap",
    "overlay",
]
