"""Where TensorFlow runs: a GPU when there is one (with memory growth), else all CPU cores; and in FP32."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from .config import ConfigError

logger = logging.getLogger(__name__)


def select_device(device: str | None = None, tf32: bool = False) -> str:
    """Make TensorFlow use ``device`` and return its name. Call in the process that runs the model, before use.

    Args:
        device: ``"cpu"``, ``"gpu"`` (the first GPU), ``"gpu:N"``, or None (a GPU if TensorFlow sees one).
        tf32: allow TensorFloat-32 (the network config's ``tf32``). TensorFlow 2 turns it on by default on Ampere
            and newer GPUs; off, convolutions and matrix products run in FP32, as the original's did.
    """
    check_device(device, local=False)  # the spelling; whether the GPU is here, TensorFlow says below
    import tensorflow as tf

    # a process-wide switch, which may be set at any time
    tf.config.experimental.enable_tensor_float_32_execution(tf32)
    gpus = tf.config.list_physical_devices("GPU")
    wanted = (device or ("gpu" if gpus else "cpu")).lower()
    try:
        if wanted == "cpu":
            tf.config.set_visible_devices([], "GPU")
            return "cpu"
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


def visible_gpus() -> int:
    """How many GPUs a model started here could use, without starting TensorFlow: what TensorFlow lists where it is
    imported already, else the GPUs the NVIDIA driver lists, as many as ``CUDA_VISIBLE_DEVICES`` leaves visible."""
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    gpus = Path("/proc/driver/nvidia/gpus")
    count = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return count
    listed = [v for v in visible.split(",") if v.strip() not in ("", "-1")]
    return min(count, len(listed))


def check_device(device: str | None, local: bool = True) -> None:
    """Refuse a ``device`` that cannot work, in one line, before any work (not inside each worker).

    Args:
        device: ``cpu``, ``gpu``, ``gpu:N`` or None.
        local: the model runs on this machine (no ``worker_command``): a GPU asked for must be here.

    Raises:
        ConfigError: another spelling, or a GPU (index) this machine does not have.
    """
    if device is None:
        return
    wanted = device.lower()
    if wanted != "cpu" and not (wanted == "gpu" or (wanted.startswith("gpu:") and wanted[4:].isdigit())):
        raise ConfigError(f"device '{device}': expected cpu, gpu or gpu:N")
    if wanted == "cpu" or not local:
        return
    index = int(wanted[4:]) if ":" in wanted else 0
    count = visible_gpus()
    if index >= count:
        have = "no GPU" if count == 0 else f"{count} GPU(s) (gpu:0 … gpu:{count - 1})"
        raise ConfigError(f"device '{device}': this machine has {have}; set \"device\": \"cpu\" or leave it unset "
                          "(a GPU when there is one)")  # fmt: skip


def runs_on_cpu(device: str | None = None) -> bool:
    """Whether a model placed by :func:`select_device` with ``device`` runs on the CPU: ``cpu``, or the default where
    there is no GPU.

    TensorFlow is asked only where it is imported already; elsewhere (a process that only schedules work need not
    pay its start-up) a GPU counts as present when the NVIDIA driver lists one and ``CUDA_VISIBLE_DEVICES`` does not
    hide them all.

    Args:
        device: ``"cpu"``, ``"gpu"``, ``"gpu:N"``, or None (a GPU if there is one).
    """
    if device is not None:
        return device.lower() == "cpu"
    return visible_gpus() == 0
