"""Where TensorFlow runs: a GPU when there is one (with memory growth), else all CPU cores; and in FP32."""

from __future__ import annotations

import logging

from .config import ConfigError

logger = logging.getLogger(__name__)


def select_device(device: str | None = None, tf32: bool = False) -> str:
    """Make TensorFlow use ``device`` and return its name. Call in the process that runs the model, before use.

    Args:
        device: ``"cpu"``, ``"gpu"`` (the first GPU), ``"gpu:N"``, or None (a GPU if TensorFlow sees one).
        tf32: allow TensorFloat-32 (the network config's ``tf32``). TensorFlow 2 turns it on by default on Ampere
            and newer GPUs; off, convolutions and matrix products run in FP32, as the original's did.
    """
    import tensorflow as tf

    # a process-wide switch, which may be set at any time
    tf.config.experimental.enable_tensor_float_32_execution(tf32)
    gpus = tf.config.list_physical_devices("GPU")
    wanted = (device or ("gpu" if gpus else "cpu")).lower()
    try:
        if wanted == "cpu":
            tf.config.set_visible_devices([], "GPU")
            return "cpu"
        if not wanted.startswith("gpu"):
            raise ConfigError(f"device '{device}': expected cpu, gpu or gpu:N")
        index = int(wanted.split(":")[1]) if ":" in wanted else 0
        if index >= len(gpus):
            raise ConfigError(f"device '{device}': TensorFlow sees {len(gpus)} GPU(s); use --device cpu or another index")
        tf.config.set_visible_devices([gpus[index]], "GPU")
        # grow memory as needed instead of taking the whole card (several workers can then share a GPU)
        tf.config.experimental.set_memory_growth(gpus[index], True)
        return f"gpu:{index}"
    except RuntimeError as e:  # TensorFlow was initialised already in this process: keep what it has
        logger.warning("device selection ignored (%s)", e)
        return wanted
