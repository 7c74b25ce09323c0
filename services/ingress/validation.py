"""A JSON request body checked against a pydantic model, with an error a person can act on."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from switchyard.errors import GatewayError

Model = TypeVar("Model", bound=BaseModel)
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "function-after"})
MAX_REPORTED_ERRORS = 5


def _readable_location(loc: tuple[int | str, ...]) -> str:
    """`messages.0.content`, without pydantic's union-branch labels (`str`, `list[...]`, class names)."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, str) and (
            "[" in part or part in _TYPE_NAMES or part[:1].isupper() or part.startswith("function-")
        ):
            continue
        if parts and parts[-1] == part:
            continue  # a tagged union's tag followed by the field of the same name (type=text, text)
        parts.append(str(part))
    return ".".join(parts)


def describe(exc: ValidationError) -> tuple[str, str]:
    """(message, param): up to five problems, each with where it is; param is the first location."""
    seen: list[str] = []
    first = ""
    for err in exc.errors():
        loc = _readable_location(err["loc"])
        first = first or loc
        text = f"{loc}: {err['msg']}" if loc else err["msg"]
        if text not in seen:
            seen.append(text)
        if len(seen) == MAX_REPORTED_ERRORS:
            break
    return "; ".join(seen), first


def parse_json_body(raw: bytes, model: type[Model], *, strict: bool = False) -> Model:
    """Raise GatewayError(invalid_request) naming the problem for any malformed body."""
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError("invalid_request", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise GatewayError("invalid_request", "request body must be a JSON object")
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        message, param = describe(exc)
        raise GatewayError("invalid_request", message, param=param) from None
