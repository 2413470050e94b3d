"""Config errors are one line naming the file, the key and what was expected."""

import json
import subprocess
import sys

import pytest

from lsd_nm.config import ConfigError, StrictBaseModel, load_model


class Inner(StrictBaseModel):
    sigma: float = 120.0
    """LSD sigma in nm."""


class Example(StrictBaseModel):
    iterations: int = 10
    """How many."""
    inner: Inner = Inner()
    """A nested model."""
    shapes: dict[str, tuple[int, int, int]] = {}
    """Named shapes."""


def write(tmp_path, text):
    path = tmp_path / "config.json"
    path.write_text(text)
    return path


def test_defaults_and_deltas(tmp_path):
    config = load_model(Example, write(tmp_path, '{"inner": {"sigma": 80}}'))
    assert config.iterations == 10
    assert config.inner.sigma == 80.0


def test_unknown_key(tmp_path):
    path = write(tmp_path, '{"iteratons": 3}')
    with pytest.raises(ConfigError) as e:
        load_model(Example, path)
    assert str(e.value) == f"{path}: unknown key 'iteratons' (expected one of: inner, iterations, shapes)"


def test_unknown_nested_key(tmp_path):
    path = write(tmp_path, '{"inner": {"sigam": 3}}')
    with pytest.raises(ConfigError) as e:
        load_model(Example, path)
    assert str(e.value) == f"{path}: unknown key 'inner.sigam' (expected one of: sigma)"


def test_wrong_type(tmp_path):
    path = write(tmp_path, '{"iterations": "many"}')
    with pytest.raises(ConfigError) as e:
        load_model(Example, path)
    assert str(e.value) == f"{path}: key 'iterations': input should be a valid integer, got \"many\""


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"iterations": "50"}', "key 'iterations': input should be a valid integer, got \"50\""),
        ('{"iterations": true}', "key 'iterations': input should be a valid integer, got true"),
        ('{"iterations": 50.0}', "key 'iterations': input should be a valid integer, got 50.0"),
    ],
    ids=["a string", "a boolean", "a float"],
)
def test_values_are_read_strictly_as_json(tmp_path, text, message):
    """`"50"` and `true` once passed as integers."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_model(Example, path)
    assert str(e.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    "delta, message",
    [
        ({"train": {"save_every": 0}}, "key 'train.save_every': input should be greater than or equal to 1, got 0"),
        ({"optimizer": {"learning_rate": float("nan")}}, "key 'optimizer.learning_rate': input should be a finite number, got NaN"),
        ({"optimizer": {"learning_rate": -1e-4}}, "key 'optimizer.learning_rate': input should be greater than 0, got -0.0001"),
        ({"unet": {"num_fmaps": 0}}, "key 'unet.num_fmaps': input should be greater than or equal to 1, got 0"),
    ],
    ids=["save_every 0", "learning_rate NaN", "learning_rate negative", "no feature maps"],
)
def test_network_configs_want_positive_finite_numbers(tmp_path, delta, message):
    """`save_every: 0` once ended in a ZeroDivisionError, and `learning_rate: NaN` trained to exit 0."""
    import json

    from lsd_nm.experiment import load_network_config

    folder = tmp_path / "toy" / "baseline"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"network": "baseline", **delta}))
    with pytest.raises(ConfigError) as e:
        load_network_config(folder)
    assert str(e.value) == f"{folder / 'config.json'}: {message}"


def test_wrong_shape_length(tmp_path):
    path = write(tmp_path, '{"shapes": {"input": [1, 2]}}')
    with pytest.raises(ConfigError) as e:
        load_model(Example, path)
    assert str(e.value) == f"{path}: key 'shapes.input': too few values, got [1, 2]"


def test_bad_json(tmp_path):
    path = write(tmp_path, '{"iterations": 3,\n "inner": }')
    with pytest.raises(ConfigError) as e:
        load_model(Example, path)
    assert str(e.value) == f"{path}: invalid JSON at line 2 column 11: Expecting value"


def test_a_binary_file_or_a_folder_as_config_is_one_line(tmp_path):
    path = tmp_path / "weights.json"
    path.write_bytes(b"\x89HDF\r\n\x1a\n\x00\xff")
    with pytest.raises(ConfigError) as e:
        load_model(Example, path)
    assert str(e.value) == f"{path}: not a JSON text file (byte 0 is not UTF-8: a binary file?)"
    with pytest.raises(ConfigError) as e:
        load_model(Example, tmp_path)
    assert str(e.value) == f"{tmp_path}: is a folder, not a JSON file"


def test_not_an_object(tmp_path):
    path = write(tmp_path, "[1, 2]")
    with pytest.raises(ConfigError) as e:
        load_model(Example, path)
    assert str(e.value) == f"{path}: expected a JSON object at the top level, got list"


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_model(Example, tmp_path / "nope.json")
    assert str(e.value) == f"{tmp_path / 'nope.json'}: file not found"


def test_messages_are_one_line(tmp_path):
    for text in ['{"iterations": [1]}', '{"inner": {"sigma": {}}}', "{", '{"x": 1, "y": 2}']:
        with pytest.raises(ConfigError) as e:
            load_model(Example, write(tmp_path, text))
        assert "\n" not in str(e.value)


def test_cli_reports_one_line_and_exit_code(tmp_path, tiny_datasets_file):
    data = json.loads(tiny_datasets_file.read_text())
    data["tiny"]["voxel_sise"] = [1, 1, 1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    code = f"from lsd_nm.datasets import load_datasets; from lsd_nm.cli import run; import sys; sys.exit(run(lambda: load_datasets({str(bad)!r})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {bad}: unknown key 'tiny.voxel_sise' (expected one of: synthetic, test_volumes, unlabelled_id, "
        "volumes, voxel_size)\n"
    )
