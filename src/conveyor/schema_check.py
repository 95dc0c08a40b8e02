"""Check a payload against a task's published JSON Schema, without the task's code.

Covers what pydantic emits for handler signatures: ``type``, ``properties``, ``required``,
``additionalProperties``, ``items``/``prefixItems``, ``enum``, ``const``, ``anyOf``/``oneOf``/
``allOf``, ``$ref`` into ``$defs``, number bounds, string length and ``pattern``, array length.
Other keywords (``format``, ...) are not checked: the worker validates again when it runs the job.
Stricter than pydantic's lax mode on purpose: no coercion (``"5"`` is not an integer, nor is
``5.0``), because the stored payload is what the handler gets.

Errors read like the app's own (`conveyor.task`): ``task 'x': missing required field
'payload.a'``, ``unknown field 'payload.b'``, ``invalid 'payload.c': expected integer, got
string``.
"""

from __future__ import annotations

import operator
import re
from typing import Any

from .errors import ValidationError
from .inputs import field_path

MAX_DEPTH = 64  # $ref chains and nesting: a recursive schema cannot loop forever
_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
          dict: "object", type(None): "null"}  # fmt: skip


def check_payload(schema: dict[str, Any], payload: Any, task: str) -> None:
    """Raise `ValidationError` (naming the field) unless ``payload`` matches ``schema``."""
    found = _error(schema, payload, "payload", schema, 0)
    if found is not None:
        field, message = found
        raise ValidationError(f"task {task!r}: {message}", field=field)


def _kind(value: Any) -> str:
    return _NAMES.get(type(value), type(value).__name__)


def _is(value: Any, t: str) -> bool:
    kind = _kind(value)
    return kind == t or (t == "number" and kind == "integer")


def _resolve(root: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        return {}  # a remote reference: not checked here
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node


def _error(schema: Any, value: Any, path: str, root: dict[str, Any], depth: int) -> tuple[str, str] | None:  # fmt: skip
    """The first problem as (field, message), or None."""
    if schema is False:
        return path, f"field {path!r} is not allowed"
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None
    depth += 1
    if "$ref" in schema:
        found = _error(_resolve(root, schema["$ref"]), value, path, root, depth)
        if found is not None:
            return found
    t = schema.get("type")
    if t is not None:
        types = [t] if isinstance(t, str) else list(t)
        if not any(_is(value, x) for x in types):
            return path, f"invalid {path!r}: expected {' or '.join(types)}, got {_kind(value)}"
    if "const" in schema and not _same(value, schema["const"]):
        return path, f"invalid {path!r}: must be {schema['const']!r}"
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        allowed = ", ".join(repr(e) for e in schema["enum"])
        return path, f"invalid {path!r}: must be one of {allowed}"
    for sub in schema.get("allOf", ()):
        found = _error(sub, value, path, root, depth)
        if found is not None:
            return found
    for key in ("anyOf", "oneOf"):
        if key in schema:
            errors = [_error(sub, value, path, root, depth) for sub in schema[key]]
            if all(e is not None for e in errors):
                real = [e for e, sub in zip(errors, schema[key], strict=True)
                        if sub.get("type") != "null"]  # fmt: skip
                return real[0] if len(real) == 1 else (path, f"invalid {path!r}: matches none "
                                                             "of the allowed forms")  # fmt: skip
    if isinstance(value, dict):
        return _object(schema, value, path, root, depth)
    if isinstance(value, list):
        return _array(schema, value, path, root, depth)
    if isinstance(value, str):
        return _string(schema, value, path)
    if _is(value, "number"):
        return _number(schema, value, path)
    return None


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _object(schema: dict[str, Any], value: dict[str, Any], path: str, root: dict[str, Any],
            depth: int) -> tuple[str, str] | None:  # fmt: skip
    props = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in value:
            field = field_path(path, [name])
            return field, f"missing required field {field!r}"
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        field = field_path(path, [name])
        if name in props:
            found = _error(props[name], item, field, root, depth)
        elif extra is False:
            return field, f"unknown field {field!r}"
        else:
            found = _error(extra, item, field, root, depth)
        if found is not None:
            return found
    return None


def _array(schema: dict[str, Any], value: list[Any], path: str, root: dict[str, Any],
           depth: int) -> tuple[str, str] | None:  # fmt: skip
    if len(value) < schema.get("minItems", 0):
        return path, f"invalid {path!r}: needs at least {schema['minItems']} items"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return path, f"invalid {path!r}: takes at most {schema['maxItems']} items"
    prefix = schema.get("prefixItems", ())
    for i, item in enumerate(value):
        sub = prefix[i] if i < len(prefix) else schema.get("items", True)
        found = _error(sub, item, f"{path}[{i}]", root, depth)
        if found is not None:
            return found
    return None


def _string(schema: dict[str, Any], value: str, path: str) -> tuple[str, str] | None:
    if len(value) < schema.get("minLength", 0):
        return path, f"invalid {path!r}: needs at least {schema['minLength']} characters"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return path, f"invalid {path!r}: takes at most {schema['maxLength']} characters"
    pattern = schema.get("pattern")
    if pattern is not None:
        try:
            if re.search(pattern, value) is None:
                return path, f"invalid {path!r}: does not match {pattern!r}"
        except re.error:
            return None  # a pattern Python cannot read: left to the worker
    return None


def _number(schema: dict[str, Any], value: float, path: str) -> tuple[str, str] | None:
    for key, ok in (("minimum", operator.ge), ("maximum", operator.le),
                    ("exclusiveMinimum", operator.gt), ("exclusiveMaximum", operator.lt)):  # fmt: skip
        if key in schema and not ok(value, schema[key]):
            return path, f"invalid {path!r}: {value!r} is out of range ({key} {schema[key]})"
    multiple = schema.get("multipleOf")
    if multiple and (value / multiple) != int(value / multiple):
        return path, f"invalid {path!r}: must be a multiple of {multiple}"
    return None


__all__ = ["check_payload"]
