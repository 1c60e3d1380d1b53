"""The one loader of agq's YAML configs (training and hardware): file or packaged name -> validated dataclass.

Torch-free, so that every stage can load a config without importing a later stage's libraries. A
config class is a frozen dataclass whose fields are typed (``int``, ``float``, ``bool``, ``str``,
``Literal``, ``list[...]``, a nested dataclass or a union of those) and whose ``validate()`` raises
:class:`agq.errors.AgqError` naming the dotted key. Every problem with the file itself (missing, a
folder, empty, not YAML, not a mapping, a malformed ``--set``) is one line naming the file or the key.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from agq.errors import AgqError

T = TypeVar("T")
PACKAGE = "agq.configs"  # configs/, installed as package data (pyproject)
SUFFIX = ".yaml"


def _packaged_root(folder: str = "") -> Any:
    root = importlib.resources.files(PACKAGE)
    return root.joinpath(folder) if folder else root


def packaged_configs(folder: str = "") -> list[str]:
    """Names of the configs shipped with agq under ``folder`` (e.g. ``hw``)."""
    root = _packaged_root(folder)
    return sorted(p.name.removesuffix(SUFFIX) for p in root.iterdir() if p.name.endswith(SUFFIX))


def packaged_config(name: str, folder: str = "") -> Path:
    """The file of the packaged config ``name`` (e.g. ``mnist_plain_ag``, ``bench/mnist_deep``). agq
    installs as plain folders, never zipped, so package data is a real file."""
    return Path(str(_packaged_root(folder).joinpath(name.removesuffix(SUFFIX) + SUFFIX)))


def resolve_config(name_or_path: str | Path, folder: str = "") -> Path:
    """The path as given when it exists, else the packaged config of that name (``mnist_plain_ag`` ->
    agq.configs/mnist_plain_ag.yaml; ``folder``: where to look, e.g. ``hw`` for hardware configs)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    packaged = packaged_config(path.as_posix(), folder)
    if not path.is_absolute() and packaged.is_file():
        return packaged
    known = ", ".join(packaged_configs(folder))
    raise AgqError(f"config file not found: {path} (nor a packaged config of that name: {known})")


def read_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file; an unusable file is one line naming it."""
    if path.is_dir():
        raise AgqError(f"config file {path} is a folder, not a YAML file")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AgqError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AgqError(f"config file {path} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AgqError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:  # an empty file would otherwise silently mean "all defaults"
        raise AgqError(f"config file {path} is empty (write at least one key; the defaults are not a model)")
    if not isinstance(data, dict):
        raise AgqError(f"config file {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``--set key=value`` (the value is YAML, e.g. ``[16, 32]``, ``true``, ``1e-3``)."""
    key, eq, raw = assignment.partition("=")
    if not eq or not key:
        raise AgqError(f"--set {assignment!r}: expected key=value")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise AgqError(f"--set {key}: the value {raw!r} is not valid YAML ({first})") from None
    node = data
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise AgqError(f"--set {key}: {part} is not a section")
    node[leaf] = value


BASE_KEY = "base"  # a training config may name another (a path relative to it) and list only its changes


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied: sections merge key by key, any other value replaces."""
    out = dict(base)
    for key, value in changes.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def _with_bases(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of ``path`` on top of the chain of configs its ``base`` keys name."""
    if path.resolve() in seen:
        raise AgqError(f"config file {path}: '{BASE_KEY}' leads back to itself")
    data = read_mapping(path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise AgqError(f"config file {path}: '{BASE_KEY}' must be a file name, got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        raise AgqError(f"config file {path}: {BASE_KEY}={base!r} names no file ({base_path})")
    return _merged(_with_bases(base_path, (*seen, path.resolve())), data)


def load_mapping(path: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """A config file's mapping (on top of its ``base`` chain) with the ``--set`` overrides applied."""
    data = _with_bases(path)
    for assignment in overrides or []:
        apply_override(data, assignment)
    return data


def _coerce(value: Any, tp: Any, key: str, what: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted where floats are expected)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise AgqError(f"{what} {key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, what, key + ".")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise AgqError(f"{what} {key}={value!r}: must be one of {list(typing.get_args(tp))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise AgqError(f"{what} {key}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]", what) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(tp):
            try:
                return _coerce(value, member, key, what)
            except AgqError:
                continue
        names = " or ".join(m.__name__ for m in typing.get_args(tp))
        raise AgqError(f"{what} {key}={value!r}: expected {names}, got {type(value).__name__}")
    if tp is bool:
        if not isinstance(value, bool):
            raise AgqError(f"{what} {key}={value!r}: expected true/false")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise AgqError(f"{what} {key}={value!r}: must be a finite number")
    if not isinstance(value, tp) or isinstance(value, bool):
        raise AgqError(f"{what} {key}={value!r}: expected {tp.__name__}, got {type(value).__name__}")
    return value


def _build(cls: type[T], data: dict[str, Any], what: str, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise AgqError(f"{what}: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    return cls(**{k: _coerce(v, hints[k], prefix + k, what) for k, v in data.items()})


def from_mapping(cls: type[T], data: dict[str, Any], what: str = "config") -> T:
    """Type-check plain data against the dataclass ``cls`` and validate it; ``what`` starts every
    message (e.g. ``config``, ``hw config``)."""
    cfg = _build(cls, data, what)
    cfg.validate()
    return cfg


def with_file(path: Path, build: typing.Callable[[], T]) -> T:
    """Run ``build`` (type check + validation of ``path``'s content) so that its error names the file."""
    try:
        return build()
    except AgqError as exc:
        raise AgqError(f"{exc} (in {path})", exc.exit_code) from None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> one mapping of dotted keys (``{"model": {"a": 1}}`` -> ``{"model.a": 1}``)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        out |= flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v}
    return out


def differences(old: dict[str, Any], new: dict[str, Any],
                ignore: typing.Collection[str] = ()) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) of every key whose value differs, in key order; a key missing on
    one side has the value None there. ``ignore`` lists keys that may differ: a dotted key, or a whole
    section as its name with a trailing dot (``ag.``)."""
    a, b = flatten(old), flatten(new)
    sections = tuple(k for k in ignore if k.endswith("."))

    def ignored(key: str) -> bool:
        return key in ignore or key.startswith(sections)

    keys = dict.fromkeys([*a, *b])
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k) and not ignored(k)]
