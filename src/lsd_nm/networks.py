"""The paper's networks in Keras 3: one valid-padding 3D U-Net and the heads of the seven network types.

The U-Net is the original's ``mala.networks.unet``: two valid 3×3×3 convolutions + ReLU per level and path,
max-pooling down, transposed convolutions (kernel = stride = factor, + ReLU) up, the left feature map centre-cropped
and concatenated as ``[skip, up]``. Heads are 1×1×1 convolutions with a sigmoid. Layer names are the original's TF1
names (``unet_layer_0_left_0``, ``unet_up_1_to_0``, …), which the importer of the published checkpoints relies on.

Tensors are channels-last inside the network (channels-first 3D ops need oneDNN on CPUs); gunpowder's
channels-first arrays are converted at the node boundary (:mod:`lsd_nm.nodes`).

=========== ================================= ================= ============================
network     inputs (channels)                 heads (channels)  loss
=========== ================================= ================= ============================
baseline    raw (1)                           affs (3)          MSE
long_range  raw (1)                           affs (12)         MSE
malis       raw (1)                           affs (3)          MSE, then constrained MALIS
lsd         raw (1)                           lsds (10)         MSE
mtlsd       raw (1)                           lsds (10), affs   MSE + MSE
aclsd       lsds (10) of a frozen lsd net      affs (3)          MSE
acrlsd      raw (1) + lsds (10)               affs (3)          MSE
=========== ================================= ================= ============================
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from .config import ConfigError
from .data import write_text
from .experiment import NetworkConfig, NetworkFolder, Shape, UNetConfig, config_file_of

NUM_LSDS = 10
"""Channels of the 3D local shape descriptor: mean offset (3), covariance (6), size (1)."""


@dataclass
class TensorSpec:
    """One input or output of a network: channels and spatial shape (voxels, z y x)."""

    channels: int
    shape: Shape
    dtype: str = "float32"


@dataclass
class NetworkIO:
    """What a network built for one input shape takes and gives (what mknet writes to ``net_<role>.json``)."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    parameters: int = 0
    flops_per_output_voxel: float = 0.0
    layers: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


# ---- shape arithmetic (pure Python: no TensorFlow needed to know the shapes) ---------------------------------------


def unet_output_shape(unet: UNetConfig, input_shape: Shape, key: str = "input shape") -> Shape:
    """Spatial output shape of the U-Net for ``input_shape``; a one-line :class:`ConfigError` (naming ``key``, the
    config key the shape comes from) if it is invalid."""
    return _unet_layers(unet, 1, input_shape, key)[-1]["out_shape"]


def _unet_layers(unet: UNetConfig, in_channels: int, input_shape: Shape, key: str = "input shape") -> list[dict]:
    """Every layer of the U-Net with its shapes and channels, in execution order (mirrors :func:`build_unet`); an
    invalid ``input_shape`` is a one-line :class:`ConfigError` naming ``key`` (e.g. ``predict_input_shape``)."""
    k = unet.kernel_size
    layers: list[dict] = []

    def conv(name, shape, c_in, c_out, kernel=(k, k, k)):
        out = tuple(s - kk + 1 for s, kk in zip(shape, kernel))
        if min(out) <= 0:
            raise ConfigError(f"{key} {tuple(input_shape)}: layer {name} would have output shape {out} (≤ 0); use a larger input")
        layers.append(dict(name=name, op="conv", kernel=tuple(kernel), c_in=c_in, c_out=c_out, in_shape=shape, out_shape=out))
        return out

    def level(shape, c_in, lvl):
        f = unet.num_fmaps * unet.fmap_inc_factor**lvl
        shape = conv(f"unet_layer_{lvl}_left_0", shape, c_in, f)
        shape = conv(f"unet_layer_{lvl}_left_1", shape, f, f)
        if lvl == len(unet.downsample_factors):
            return shape, f
        factor = unet.downsample_factors[lvl]
        if any(s % d for s, d in zip(shape, factor)):
            raise ConfigError(
                f"{key} {tuple(input_shape)}: unet_down_{lvl}_to_{lvl + 1} gets shape {shape}, "
                f"not divisible by the downsample factor {tuple(factor)}"
            )
        down = tuple(s // d for s, d in zip(shape, factor))
        layers.append(dict(name=f"unet_down_{lvl}_to_{lvl + 1}", op="maxpool", kernel=tuple(factor), c_in=f, c_out=f, in_shape=shape, out_shape=down))
        below, c_below = level(down, f, lvl + 1)
        up = tuple(s * d for s, d in zip(below, factor))
        layers.append(dict(name=f"unet_up_{lvl + 1}_to_{lvl}", op="convT", kernel=tuple(factor), c_in=c_below, c_out=f, in_shape=below, out_shape=up))
        if any(u > s for u, s in zip(up, shape)):
            raise ConfigError(f"{key} {tuple(input_shape)}: upsampled shape {up} exceeds the skip connection's {shape}")
        layers.append(dict(name=f"crop_{lvl}", op="crop", kernel=None, c_in=f, c_out=f, in_shape=shape, out_shape=up))
        f_out = unet.num_fmaps_out if (lvl == 0 and unet.num_fmaps_out) else f
        shape = conv(f"unet_layer_{lvl}_right_0", up, 2 * f, f_out)
        shape = conv(f"unet_layer_{lvl}_right_1", shape, f_out, f_out)
        return shape, f_out

    level(tuple(input_shape), in_channels, 0)
    return layers


def heads(config: NetworkConfig) -> dict[str, int]:
    """Output heads and their channels."""
    affs = len(config.neighborhood)
    return {
        "baseline": {"affs": affs},
        "long_range": {"affs": affs},
        "malis": {"affs": affs},
        "lsd": {"lsds": NUM_LSDS},
        "mtlsd": {"lsds": NUM_LSDS, "affs": affs},
        "aclsd": {"affs": affs},
        "acrlsd": {"affs": affs},
    }[config.network]


def network_io(config: NetworkConfig, role: str = "train", raw_shape: Shape | None = None) -> NetworkIO:
    """Inputs, outputs, parameter count and cost of the network trained in a folder, for ``role`` train or predict.

    For acrlsd the raw input is larger than the LSD input during training (the auto net's input), and the network
    crops it to the LSD input's shape itself; during prediction both have the same shape unless ``raw_shape``
    says otherwise (LSDs predicted on the fly from a larger raw input).
    """
    shape = tuple(config.input_shape if role == "train" else config.predict_input_shape)
    if config.network == "aclsd":
        inputs = {"lsds": TensorSpec(NUM_LSDS, shape)}
    elif config.network == "acrlsd":
        if raw_shape is None:
            raw_shape = tuple(config.autocontext.auto_input_shape) if role == "train" else shape
        if any(r < s for r, s in zip(raw_shape, shape)):
            raise ConfigError(f"autocontext.auto_input_shape {raw_shape} is smaller than input_shape {shape}")
        inputs = {"raw": TensorSpec(1, raw_shape), "lsds": TensorSpec(NUM_LSDS, shape)}
    else:
        inputs = {"raw": TensorSpec(1, shape)}
    in_channels = sum(t.channels for t in inputs.values())
    layers = _unet_layers(config.unet, in_channels, shape, "input_shape" if role == "train" else "predict_input_shape")
    out_shape = layers[-1]["out_shape"]
    c_top = layers[-1]["c_out"]
    for name, channels in heads(config).items():
        layers.append(dict(name=f"{name}_0", op="conv", kernel=(1, 1, 1), c_in=c_top, c_out=channels, in_shape=out_shape, out_shape=out_shape))
    outputs = {name: TensorSpec(c, out_shape, "uint8") for name, c in heads(config).items()}
    params, flops = 0, 0.0
    for layer in layers:
        if layer["op"] in ("conv", "convT"):
            params += int(np.prod(layer["kernel"])) * layer["c_in"] * layer["c_out"] + layer["c_out"]
            # multiply-adds ×2; a transposed conv with stride = kernel does c_in MACs per output voxel and channel
            macs_per_voxel = layer["c_in"] * layer["c_out"] * (int(np.prod(layer["kernel"])) if layer["op"] == "conv" else 1)
            flops += 2.0 * macs_per_voxel * int(np.prod(layer["out_shape"]))
    return NetworkIO(
        inputs=inputs,
        outputs=outputs,
        parameters=params,
        flops_per_output_voxel=flops / float(np.prod(out_shape)),
        layers=[{k: (list(v) if isinstance(v, tuple) else v) for k, v in layer.items()} for layer in layers],
    )


def smallest_input_for(unet: UNetConfig, min_output: Shape, probe: Shape) -> Shape:
    """The smallest valid input shape whose output is at least ``min_output`` (``probe``: any valid input shape).

    Valid-U-Net shape rules act on each axis alone, so each axis is searched with the others held at ``probe``.
    """
    context = [p - o for p, o in zip(probe, unet_output_shape(unet, probe))]
    shape = list(probe)
    for axis in range(3):
        size = min_output[axis] + context[axis]
        for _ in range(1000):
            trial = tuple(size if a == axis else probe[a] for a in range(3))
            try:
                if unet_output_shape(unet, trial)[axis] >= min_output[axis]:
                    break
            except ConfigError:
                pass
            size += 1
        shape[axis] = size
    return tuple(shape)


def auto_io(lsd_config: NetworkConfig, auto_input_shape: Shape) -> NetworkIO:
    """The frozen lsd net of aclsd/acrlsd at the auto input shape (its LSDs are later cropped)."""
    try:
        return network_io(lsd_config.model_copy(update={"input_shape": tuple(auto_input_shape)}), "train")
    except ConfigError as e:
        raise ConfigError(str(e).replace("input_shape", "autocontext.auto_input_shape", 1)) from None


# ---- Keras models --------------------------------------------------------------------------------------------------


def _centre_crop(x, shape: Shape, name: str):
    import keras

    current = tuple(int(s) for s in x.shape[1:4])
    crop = tuple(((c - s) // 2, (c - s) - (c - s) // 2) for c, s in zip(current, shape))
    if all(a == 0 and b == 0 for a, b in crop):
        return x
    return keras.layers.Cropping3D(crop, name=name)(x)


def build_unet(x, unet: UNetConfig):
    """The U-Net on a channels-last tensor ``x`` (1, z, y, x, c); layer names as in the original's TF1 graphs."""
    import keras

    k = unet.kernel_size

    def conv_pass(x, fmaps, prefix):
        for i in range(2):
            x = keras.layers.Conv3D(fmaps, k, padding="valid", activation="relu", name=f"{prefix}_{i}")(x)
        return x

    def level(x, lvl):
        f = unet.num_fmaps * unet.fmap_inc_factor**lvl
        left = conv_pass(x, f, f"unet_layer_{lvl}_left")
        if lvl == len(unet.downsample_factors):
            return left
        factor = tuple(unet.downsample_factors[lvl])
        down = keras.layers.MaxPooling3D(factor, strides=factor, padding="valid", name=f"unet_down_{lvl}_to_{lvl + 1}")(left)
        below = level(down, lvl + 1)
        up = keras.layers.Conv3DTranspose(
            f, factor, strides=factor, padding="valid", activation="relu", name=f"unet_up_{lvl + 1}_to_{lvl}"
        )(below)
        skip = _centre_crop(left, tuple(int(s) for s in up.shape[1:4]), f"crop_{lvl}")
        merged = keras.layers.Concatenate(axis=-1, name=f"concat_{lvl}")([skip, up])
        f_out = unet.num_fmaps_out if (lvl == 0 and unet.num_fmaps_out) else f
        return conv_pass(merged, f_out, f"unet_layer_{lvl}_right")

    return level(x, 0)


def build_model(config: NetworkConfig, role: str = "train", name: str | None = None, raw_shape: Shape | None = None):
    """The Keras model of a folder's network for ``role`` (train or predict input shapes); same weights for both.

    Inputs and outputs are named (``raw``, ``lsds`` / ``affs``, ``lsds``) and channels-last.
    """
    import keras

    io = network_io(config, role, raw_shape)
    inputs = {n: keras.Input(shape=(*t.shape, t.channels), batch_size=1, name=n) for n, t in io.inputs.items()}
    if config.network == "acrlsd":
        lsds = inputs["lsds"]
        raw = _centre_crop(inputs["raw"], tuple(int(s) for s in lsds.shape[1:4]), "crop_raw")
        x = keras.layers.Concatenate(axis=-1, name="concat_raw_lsds")([raw, lsds])  # channel 0 raw, 1–10 LSDs
    else:
        (x,) = inputs.values()
    features = build_unet(x, config.unet)
    outputs = {
        head: keras.layers.Conv3D(c, 1, activation="sigmoid", name=f"{head}_0")(features) for head, c in heads(config).items()
    }
    # identity layers give the outputs their plain names
    outputs = {head: keras.layers.Identity(name=head)(t) for head, t in outputs.items()}
    return keras.Model(inputs=inputs, outputs=outputs, name=name or f"{config.network}_{role}")


def build_auto_model(lsd_config: NetworkConfig, auto_input_shape: Shape):
    """The frozen lsd net of aclsd/acrlsd, built for the auto input shape."""
    return build_model(lsd_config.model_copy(update={"input_shape": tuple(auto_input_shape)}), "train", name="auto")


def tensors(specs: dict[str, TensorSpec]) -> str:
    """Named tensors in words, e.g. ``raw 1×(196, 196, 196), affs 3×(104, 104, 104)``."""
    return ", ".join(f"{n} {t.channels}×{t.shape}" for n, t in specs.items())


def describe(io: NetworkIO) -> str:
    """A readable summary: layers with shapes, parameters, FLOPs per output voxel."""
    lines = [f"{'layer':<22} {'op':<8} {'kernel':<10} {'channels':<12} {'in shape':<18} out shape"]
    for layer in io.layers:
        kernel = "x".join(map(str, layer["kernel"])) if layer["kernel"] else ""
        lines.append(
            f"{layer['name']:<22} {layer['op']:<8} {kernel:<10} {str(layer['c_in']) + '→' + str(layer['c_out']):<12} "
            f"{str(tuple(layer['in_shape'])):<18} {tuple(layer['out_shape'])}"
        )
    lines += [
        f"inputs: {tensors(io.inputs)}",
        f"outputs: {tensors(io.outputs)}",
        f"parameters: {io.parameters:,}",
        f"forward cost: {io.flops_per_output_voxel:.3e} FLOP per output voxel",
    ]
    return "\n".join(lines)


# ---- mknet ---------------------------------------------------------------------------------------------------------


def folder_io(folder: NetworkFolder) -> dict[str, NetworkIO]:
    """The descriptions (by role: train, predict, auto) of a folder's network, checking that its shapes work.

    Shapes that do not work (pooling that does not divide, outputs ≤ 0, an auto net whose output does not cover the
    affs net's input) are one-line :class:`ConfigError`\\ s.
    """
    config = folder.config
    ios = {}
    for role, key in (("train", "input_shape"), ("predict", "predict_input_shape")):
        try:
            ios[role] = network_io(config, role)
        except ConfigError as e:
            raise ConfigError(f"{config_file_of(folder.path, key)}: {e}") from None
    if folder.lsd is not None:
        try:
            auto = auto_io(folder.lsd.config, config.autocontext.auto_input_shape)
        except ConfigError as e:
            raise ConfigError(f"{config_file_of(folder.path, 'autocontext.auto_input_shape')}: {e}") from None
        have, need = auto.outputs["lsds"].shape, config.input_shape
        if any(h < n for h, n in zip(have, need)):
            raise ConfigError(
                f"{folder.path}: the lsd net's output {have} at autocontext.auto_input_shape "
                f"{tuple(config.autocontext.auto_input_shape)} does not cover input_shape {tuple(need)}"
            )
        ios["auto"] = auto
    return ios


def mknet(folder: NetworkFolder) -> dict[str, NetworkIO]:
    """Check a folder's network (:func:`folder_io`) and write ``net_train.json``, ``net_predict.json`` (+ auto)."""
    ios = folder_io(folder)
    for role, io in ios.items():
        description = {"network": folder.config.network, "role": role, **io.to_json()}
        write_text(folder.path / f"net_{role}.json", json.dumps(description, indent=2) + "\n")
    return ios


def mknet_lines(folder: NetworkFolder, shown: str | None = None) -> list[str]:
    """``lsd-nm mknet``: :func:`mknet`, told as the training network's :func:`describe`, a line per other role and
    the files written in the folder (named ``shown``, as the user gave it; default: its path)."""
    ios = mknet(folder)
    lines = [describe(ios["train"])]
    for role in ("predict", "auto"):
        if role in ios:
            io = ios[role]
            # the cost per output voxel falls with the input size (less of the context is recomputed)
            lines.append(f"{role}: {tensors(io.inputs)} → {tensors(io.outputs)}; forward cost {io.flops_per_output_voxel:.3e} FLOP per output voxel")
    return lines + [f"wrote net_{{{','.join(ios)}}}.json in {shown if shown is not None else folder.path}"]
