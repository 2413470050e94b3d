"""Device selection: FP32 unless a network config allows TF32, whatever the device."""

import sys

import pytest

from lsd_nm import device
from lsd_nm.config import ConfigError
from lsd_nm.device import check_device, select_device
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


def test_a_gpu_this_machine_does_not_have_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(device, "visible_gpus", lambda: 0)
    with pytest.raises(ConfigError, match=r"^device 'gpu': this machine has no GPU; set \"device\": \"cpu\""):
        check_device("gpu")
    check_device("gpu", local=False)  # workers on other machines (a worker_command): theirs are not known here
    check_device("cpu")
    check_device(None)
    monkeypatch.setattr(device, "visible_gpus", lambda: 2)
    check_device("gpu:1")
    with pytest.raises(ConfigError, match=r"device 'GPU:2': this machine has 2 GPU\(s\) \(gpu:0 … gpu:1\)"):
        check_device("GPU:2")
    with pytest.raises(ConfigError, match="device 'gpu:x': expected cpu, gpu or gpu:N"):
        check_device("gpu:x", local=False)


def test_visible_gpus_follows_cuda_visible_devices(monkeypatch, tmp_path):
    if "tensorflow" in sys.modules:  # then TensorFlow is asked; the driver's list is what processes without it see
        monkeypatch.delitem(sys.modules, "tensorflow")
    listing = tmp_path / "gpus"
    for name in ("0000:01:00.0", "0000:02:00.0"):
        (listing / name).mkdir(parents=True)
    monkeypatch.setattr(device, "Path", lambda _: listing)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert device.visible_gpus() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert device.visible_gpus() == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert device.visible_gpus() == 0
