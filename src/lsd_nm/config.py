"""Strict configuration models and the one way to read them from JSON files.

Every config of the project is a pydantic model derived from :class:`StrictBaseModel`: unknown keys are errors,
defaults live in the model and each field is documented by the docstring under it. Files hold only what differs
from the defaults. Values are checked as JSON, strictly (:func:`validate`): ``"50"``, ``true`` or ``50.0`` are no
integer, ``NaN`` and ``Infinity`` no number, and counts, sizes and rates are positive where the config means them
(:data:`PositiveInt`, :data:`PositiveFloat`). :func:`load_model` turns every problem with a file (missing, invalid
JSON, unknown key, wrong type) into a :class:`ConfigError` whose message is one line naming the file, the key and
what was expected.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

PositiveInt = Annotated[int, Field(ge=1)]
"""An integer ≥ 1 (a count, an iteration, a size in voxels)."""
NonNegativeInt = Annotated[int, Field(ge=0)]
"""An integer ≥ 0."""
PositiveFloat = Annotated[float, Field(gt=0)]
"""A number > 0 (a rate, a sigma, a size in nm)."""
Fraction = Annotated[float, Field(ge=0, le=1)]
"""A number in [0, 1]."""


class StrictBaseModel(BaseModel):
    """A pydantic model that forbids unknown keys, takes finite numbers only, and documents its fields with attribute
    docstrings."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True, allow_inf_nan=False)


class ConfigError(ValueError):
    """A problem with a configuration file or value; its message is one line meant for the user."""


def user_error(error: BaseException) -> ConfigError | None:
    """The :class:`ConfigError` behind ``error`` (libraries such as gunpowder wrap what our nodes raise), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ConfigError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


Model = TypeVar("Model", bound=BaseModel)


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _expected(model: Any, loc: tuple[Any, ...]) -> str:
    """The keys allowed at ``loc`` (for an unknown-key error), walking models, dicts, lists and optionals."""
    current = model
    for part in loc[:-1]:
        current = _child(current, part)
        if current is None:
            return ""
    fields = getattr(_unwrap(current), "model_fields", None)
    return ", ".join(sorted(fields)) if fields else ""


def _unwrap(annotation: Any) -> Any:
    """Strip Optional[...] and RootModel wrappers."""
    while True:
        if isinstance(annotation, type) and issubclass(annotation, RootModel):
            annotation = annotation.model_fields["root"].annotation
            continue
        args = [a for a in get_args(annotation) if a is not type(None)]
        if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
            annotation = args[0]
            continue
        return annotation


def _child(annotation: Any, part: Any) -> Any:
    annotation = _unwrap(annotation)
    fields = getattr(annotation, "model_fields", None)
    if fields is not None:
        return fields[part].annotation if part in fields else None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin in (list, tuple) and args:
        return args[0]
    return None


def format_validation_error(source: str, model: type[BaseModel], error: ValidationError) -> str:
    """One line for the first error of a pydantic ValidationError."""
    first = error.errors()[0]
    loc = tuple(first["loc"])
    key = _location(loc)
    if first["type"] == "extra_forbidden":
        allowed = _expected(model, loc)
        return f"{source}: unknown key '{key}' (expected one of: {allowed})"
    if first["type"] == "missing":
        if loc and isinstance(loc[-1], int):  # a tuple with too few values
            value = json.dumps(first.get("input"), default=str)
            return f"{source}: key '{_location(loc[:-1])}': too few values, got {value}"
        return f"{source}: missing key '{key}'"
    if not loc:  # a check across keys
        return f"{source}: {first['msg'].removeprefix('Value error, ')}"
    value = first.get("input")
    return f"{source}: key '{key}': {first['msg'].lower()}, got {json.dumps(value, default=str)}"


def validate_json_data(model: type[Model], data: Any) -> Model:
    """Validate ``data`` (as read from JSON files) against ``model`` in pydantic's strict JSON mode: arrays are tuples,
    integers are integers (not strings, booleans or floats), booleans are booleans.

    Raises:
        ValidationError: as pydantic raises it (see :func:`validate` for the one-line form).
    """
    return model.model_validate_json(json.dumps(data, default=str), strict=True)


def validate(model: type[Model], data: Any, source: str) -> Model:
    """Validate ``data`` (a dict read from JSON) against ``model``, strictly (:func:`validate_json_data`); a one-line
    :class:`ConfigError` names ``source`` on failure."""
    try:
        return validate_json_data(model, data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(source, model, e)) from None


def read_json(path: Path) -> Any:
    """Read a JSON file; a missing file or invalid JSON is a one-line :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a JSON file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a JSON text file (byte {e.start} is not UTF-8: a binary file?)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def load_model(model: type[Model], path: Path, overrides: dict[str, Any] | None = None) -> Model:
    """Read ``path`` as JSON and validate it against ``model`` (``overrides`` are merged on top first)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    if overrides:
        data = {**data, **overrides}
    return validate(model, data, str(path))
