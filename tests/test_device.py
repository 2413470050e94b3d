"""Device selection: FP32 unless a network config allows TF32, whatever the device."""

import pytest

from lsd_nm.config import ConfigError
from lsd_nm.device import select_device
from lsd_nm.experiment import NetworkConfig


def tf32_enabled() -> bool:
    import tensorflow as tf

    return tf.config.experimental.tensor_float_32_execution_enabled()


def test_fp32_by_default_tf32_on_request():
    assert select_device("cpu", tf32=True) == "cpu"
    assert tf32_enabled()
    assert select_device("cpu") == "cpu"
    assert not tf32_enabled()


def test_network_config_switch():
    assert NetworkConfig.model_validate({"network": "baseline"}).tf32 is False
    assert NetworkConfig.model_validate({"network": "baseline", "tf32": True}).tf32 is True


def test_unknown_device_is_a_one_line_error():
    with pytest.raises(ConfigError, match="device 'tpu': expected cpu, gpu or gpu:N"):
        select_device("tpu")
