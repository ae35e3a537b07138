"""Distributed training: the ``tf.distribute`` strategy named in the settings, which process is the chief,
and two work-arounds Keras 3 needs under ``MultiWorkerMirroredStrategy``.

A multi-worker run reads its cluster from ``$TF_CONFIG``; only the chief writes the run directory.
"""

from __future__ import annotations

import json
import os

from cxr.errors import CxrError


def tf_config_role() -> tuple[str | None, int]:
    """(task type, index) from ``$TF_CONFIG``, or (None, 0) when unset."""
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    except json.JSONDecodeError as error:
        raise CxrError(f"TF_CONFIG is not valid JSON ({error}); expected "
                       f'{{"cluster": {{"worker": ["host:port", ...]}}, "task": {{"type": "worker", '
                       f'"index": 0}}}}.') from error
    return task.get("type"), int(task.get("index", 0))


def is_chief(strategy_name: str) -> bool:
    """Whether this process writes the run directory: always, except a non-chief multi-worker task."""
    if strategy_name != "multi-worker":
        return True
    task_type, index = tf_config_role()
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if task_type == "chief":
        return True
    return task_type in (None, "worker") and index == 0 and "chief" not in cluster


def make_strategy(name: str):
    """The ``tf.distribute`` strategy called ``name`` (default, mirrored, multi-worker)."""
    from cxr.tensorflow_loader import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise CxrError("strategy 'multi-worker' needs TF_CONFIG describing the cluster; received none. "
                           'Set TF_CONFIG=\'{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": '
                           '{"type": "worker", "index": 0}}\' on each machine (see README).')
        tf_config_role()  # validates the JSON
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise CxrError(f"Unknown strategy {name!r}; choose default, mirrored or multi-worker.")


def prebuild_for_multi_worker(model, strategy, train_data) -> None:
    """Work around Keras 3.15 under MultiWorkerMirroredStrategy: ``fit`` first reduces a distributed
    batch of the nested (x, y, w) structure to build the model symbolically, and the collective reduce
    refuses nests ("Attempt to convert a value (PerReplica…) to a Tensor"). Build from one local batch
    instead and skip that step (the instance attribute shadows the method on this model only)."""
    with strategy.scope():
        model._symbolic_build(data_batch=next(iter(train_data)))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    _patch_keras_multi_worker_reduce()


def _patch_keras_multi_worker_reduce() -> None:
    """Work around Keras 3.15 under MultiWorkerMirroredStrategy (tensorflow/tensorflow#72388): the
    train step reduces each scalar metric with ``strategy.reduce("MEAN", v, axis=0)``, which fails on a
    0-d value ("Invalid reduction dimension 0 for input with 0 dimensions"). Reduce scalars across
    replicas with ``axis=None`` instead (the values are already synchronized, so the mean is exact).
    Only called for the multi-worker strategy; other strategies never reach the patched branch."""
    from cxr.tensorflow_loader import import_keras

    import_keras()  # quietly, before reaching into Keras' internals
    from keras.src.backend.tensorflow import trainer as tensorflow_trainer

    original = tensorflow_trainer.reduce_per_replica
    if getattr(original, "cxr_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if tensorflow_trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
            from keras.src import tree

            def reduce_one(value):
                rank = getattr(getattr(value, "shape", None), "rank", None)
                return strategy.reduce("MEAN", value, axis=0 if rank else None)

            return tree.map_structure(reduce_one, values)
        return original(values, strategy, reduction)

    reduce_per_replica.cxr_patched = True
    tensorflow_trainer.reduce_per_replica = reduce_per_replica


__all__ = ["tf_config_role", "is_chief", "make_strategy", "prebuild_for_multi_worker"]
