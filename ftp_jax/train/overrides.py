"""``--set key=value`` overrides of a config made of frozen dataclasses.

:func:`apply_overrides` returns a config with some keys replaced (``finetune.epochs=10``,
``method.options.k=0.5``): each value is parsed, checked against its field's type and
set by rebuilding the dataclasses on its path, so that every dataclass's own checks
run; an unknown key is answered with the closest valid ones. :func:`config_items`
lists every key with its value, :func:`format_config` prints them (``--print-config``).
Any nesting of dataclasses and tuples of dataclasses works: the run configs of
:mod:`ftp_jax.train.config`, the experiment's and the recipes'.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import numbers
import re
import types
import typing
from typing import Any

__all__ = ["apply_overrides", "close_keys", "config_items", "format_config"]


def apply_overrides(config: Any, overrides: list[str] | dict[str, Any]) -> Any:
    """Returns ``config`` with ``key=value`` overrides (``method.learning_rate=0.1``).

    Keys are dotted paths through nested config dataclasses; an element of a
    tuple of dataclasses is addressed by its position (``methods.2.method.name``).
    :func:`config_items` lists every key with its value. Values are parsed as
    Python literals when possible (``3``, ``0.1``, ``True``, ``(0, 1)``), else
    kept as strings; a string field takes the text as it is (``method.name=ftp``).
    Each value is checked against the field's type (an int field refuses
    ``'abc'``; an int is accepted for a float field), then the config is rebuilt,
    which runs its own checks.

    Raises:
      KeyError: for a key the config does not have; the message names the key and
        the closest valid keys.
      ValueError: for a value of the wrong type (naming the key and the expected
        type) or one the config's checks refuse (naming the key and the rule).
    """
    if isinstance(overrides, dict):
        items = [(key, value, None) for key, value in overrides.items()]
    else:
        items = []
        for item in overrides:
            if "=" not in item:
                raise ValueError(
                    f"override {item!r} must look like key=value, e.g. finetune.epochs=10."
                )
            key, raw = item.split("=", 1)
            raw = raw.strip()
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                value = raw
            items.append((key.strip(), value, raw))
    for key, value, raw in items:
        try:
            config = _replace_path(config, key.split("."), value, raw, key, config)
        except (TypeError, ValueError) as error:
            if isinstance(error, _OverrideError):
                raise ValueError(str(error)) from None
            message = str(error)
            shown = raw if raw is not None else repr(value)
            raise ValueError(f"{key}={shown} is refused: {message}") from None
    return config


def config_items(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every settable key of a config (dotted, as :func:`apply_overrides` takes it) and its value.

    Nested dataclasses are expanded, and so are tuples of dataclasses (by
    position: ``methods.0.label``).
    """
    items = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        key = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value):
            items += config_items(value, key + ".")
        elif _is_dataclass_tuple(value):
            for index, element in enumerate(value):
                items += config_items(element, f"{key}.{index}.")
        else:
            items.append((key, value))
    return items


def format_config(config: Any) -> str:
    """The whole config, one ``key = value`` line per key (what ``--print-config`` prints)."""
    lines = [f"# {type(config).__name__}; set any key with --set KEY=VALUE"]
    lines += [f"{key} = {value!r}" for key, value in config_items(config)]
    return "\n".join(lines)


class _OverrideError(ValueError):
    """An override whose message is complete (names the key): re-raised as it is."""


def _is_dataclass_tuple(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and bool(value)
        and all(dataclasses.is_dataclass(element) for element in value)
    )


def _group_keys(config: Any) -> list[str]:
    """Keys of every group (nested config) and of every leaf."""
    keys = []
    for key, _ in config_items(config):
        parts = key.split(".")
        keys += [".".join(parts[: i + 1]) for i in range(len(parts))]
    return list(dict.fromkeys(keys))


def _initials(name: str) -> str:
    return "".join(word[:1] for word in name.split("_") if word)


def close_keys(config: Any, key: str, limit: int = 3) -> list[str]:
    """The valid keys of ``config`` closest to ``key`` (for "did you mean").

    Positions in tuples of configs are shown as ``<i>`` (``methods.<i>.label``).
    """
    keys = list(dict.fromkeys(re.sub(r"\.\d+\.", ".<i>.", k) for k, _ in config_items(config)))
    parts = key.split(".")
    parent, last = parts[:-1], parts[-1]
    scored = []
    for candidate in keys:
        candidate_parts = candidate.split(".")
        if candidate.endswith("." + key):  # the key without its group
            scored.append((3.0, candidate))
            continue
        name = candidate_parts[-1]
        ratio = difflib.SequenceMatcher(None, last, name).ratio()
        if len(last) > 1 and last == _initials(name):  # lr -> learning_rate
            ratio = 1.0
        if ratio < 0.7:
            continue
        same_parent = candidate_parts[:-1] == parent
        shared = sum(part in candidate_parts[:-1] for part in parent) / max(len(parent), 1)
        scored.append((ratio + same_parent + 0.5 * shared, candidate))
    found = [candidate for _, candidate in sorted(scored, key=lambda item: -item[0])]
    if not found:
        found = difflib.get_close_matches(key, _group_keys(config), n=limit, cutoff=0.6)
    return found[:limit]


def _unknown_key(root: Any, full_key: str, where: str = "") -> KeyError:
    close = close_keys(root, full_key)
    hint = f"; did you mean {' or '.join(close)}?" if close else "."
    where = f" ({where})" if where else ""
    return KeyError(
        f"the config has no key {full_key!r}{where}{hint} (--print-config lists every key)"
    )


def _replace_path(
    config: Any, parts: list[str], value: Any, raw: str | None, full_key: str, root: Any
) -> Any:
    head = parts[0]
    if _is_dataclass_tuple(config):
        if not head.isdigit() or int(head) >= len(config):
            raise _unknown_key(
                root, full_key, f"{head!r} is not a position 0..{len(config) - 1} of the tuple"
            )
        index = int(head)
        if len(parts) == 1:
            raise KeyError(
                f"{full_key!r} is a group; set one of its keys, e.g. "
                f"{config_items(config[index], full_key + '.')[0][0]}=..."
            )
        element = _replace_path(config[index], parts[1:], value, raw, full_key, root)
        return config[:index] + (element,) + config[index + 1 :]
    names = [f.name for f in dataclasses.fields(config)]
    if head not in names:
        raise _unknown_key(root, full_key)
    current = getattr(config, head)
    if len(parts) == 1:
        if dataclasses.is_dataclass(current) or _is_dataclass_tuple(current):
            example = config_items(config, "")
            example = next(k for k, _ in example if k.startswith(head + "."))
            prefix = full_key[: len(full_key) - len(head)]
            raise KeyError(
                f"{full_key!r} is a group; set one of its keys, e.g. {prefix}{example}=..."
            )
        hint = _field_types(type(config)).get(head, Any)
        value = _checked_value(value, raw, hint, full_key)
        return _rebuilt(config, head, value, full_key, raw)
    if not (dataclasses.is_dataclass(current) or _is_dataclass_tuple(current)):
        raise _unknown_key(root, full_key, f"{head!r} is a value, not a group")
    child = _replace_path(current, parts[1:], value, raw, full_key, root)
    return _rebuilt(config, head, child, full_key, raw)


def _rebuilt(config: Any, name: str, value: Any, full_key: str, raw: str | None) -> Any:
    try:
        return dataclasses.replace(config, **{name: value})
    except _OverrideError:
        raise
    except (TypeError, ValueError) as error:
        shown = raw if raw is not None else repr(value)
        raise _OverrideError(f"{full_key}={shown} is refused: {error}") from None


def _field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: no type check
        return {}


def _checked_value(value: Any, raw: str | None, hint: Any, key: str) -> Any:
    """``value`` made to fit ``hint`` (int -> float, list -> tuple, text for str), or an error."""
    if hint is str and raw is not None:
        if not isinstance(value, str):  # a string field takes the text as written
            value = raw
        return value
    if hint is bool and raw is not None and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    ok, converted = _conform(value, hint)
    if ok:
        return converted
    shown = raw if raw is not None else repr(value)
    raise _OverrideError(
        f"{key}={shown}: {key} expects {_describe(hint)}, got {_describe_value(value)}."
    )


def _conform(value: Any, hint: Any) -> tuple[bool, Any]:
    if hint is Any:
        return True, value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            ok, converted = _conform(value, option)
            if ok:
                return True, converted
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool), value
    if hint is float:
        is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return is_number, float(value) if is_number else value
    if hint is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False, value
        if len(args) == 2 and args[1] is Ellipsis:
            element_hints = [args[0]] * len(value)
        elif args:
            if len(args) != len(value):
                return False, value
            element_hints = list(args)
        else:
            return True, tuple(value)
        converted = []
        for element, element_hint in zip(value, element_hints, strict=True):
            ok, element = _conform(element, element_hint)
            if not ok:
                return False, value
            converted.append(element)
        return True, tuple(converted)
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value


def _describe(hint: Any) -> str:
    names = {bool: "True or False", int: "an int", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(hint))
    text = str(hint) if not isinstance(hint, type) else hint.__name__
    return "a " + text.replace("typing.", "")


def _describe_value(value: Any) -> str:
    if isinstance(value, str):
        return f"the text {value!r}"
    return f"{value!r} ({type(value).__name__})"
