"""A JSON request body checked against a pydantic model, with an error a person can act on."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from switchyard.errors import ErrorCode, GatewayError

from .edge import json_depth_exceeds

Model = TypeVar("Model", bound=BaseModel)
MAX_REPORTED_ERRORS = 5


_TYPE_LABELS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _names_a_field(part: int | str) -> bool:
    return isinstance(part, str) and part.isidentifier() and part[:1].islower() and part not in _TYPE_LABELS


def _readable_location(loc: tuple[int | str, ...], data: Any) -> str:
    """`messages.0.content`: the path of the error in the input, without the labels pydantic
    adds for union branches and discriminator tags (`str`, `list[...]`, `tool`). Each part
    of the location is kept only when it walks the input; the last part is kept when it names
    a field (a missing one, say)."""
    parts: list[str] = []
    node = data
    for i, part in enumerate(loc):
        walks = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if walks:
            node = node[part]
        elif i < len(loc) - 1 or not _names_a_field(part):
            continue
        parts.append(str(part))
    return ".".join(parts)


def describe(exc: ValidationError, data: Any) -> tuple[str, str]:
    """(message, param): up to five problems, each with where it is; param is the first location."""
    seen: list[str] = []
    first = ""
    for err in exc.errors():
        loc = _readable_location(err["loc"], data)
        first = first or loc
        text = f"{loc}: {err['msg']}" if loc else err["msg"]
        if text not in seen:
            seen.append(text)
        if len(seen) == MAX_REPORTED_ERRORS:
            break
    return "; ".join(seen), first


def parse_json_body(raw: bytes, model: type[Model], *, strict: bool = False, max_depth: int = 64) -> Model:
    """Raise GatewayError(invalid_request) naming the problem for any malformed body, including
    nesting deeper than `max_depth`."""
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(ErrorCode.INVALID_REQUEST, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise GatewayError(ErrorCode.INVALID_REQUEST, "request body must be a JSON object")
    if json_depth_exceeds(data, max_depth):
        raise GatewayError(ErrorCode.INVALID_REQUEST, f"request body nests deeper than {max_depth} levels")
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        message, param = describe(exc, data)
        raise GatewayError(ErrorCode.INVALID_REQUEST, message, param=param) from None
