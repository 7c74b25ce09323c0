"""`GET /v1/responses/{id}/input_items` and `POST /v1/responses/{id}/cancel`: pure parts.

A stored response keeps its conversation's input items as the caller sent them (easy-form
messages, no ids); OpenAI's list answers each as a typed item with an id, a status and content
parts. The ids are derived from the response id and the item's position, so a page's `after`
cursor names the same item on every read. Cancel exists only for background responses, which
the gateway does not run: every stored response is synchronous, and cancelling one is the 400
OpenAI answers for it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchyard.errors import ErrorCode, GatewayError

MAX_LIMIT = 100  # OpenAI's bounds on `limit`
DEFAULT_LIMIT = 20

_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


class ItemsQuery(BaseModel):
    """The list's query parameters (`include` is accepted and ignored: nothing it names is kept)."""

    model_config = ConfigDict(extra="ignore")

    after: str | None = Field(None, min_length=1)
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    order: Literal["asc", "desc"] = "desc"


def parse_query(params: dict[str, str]) -> ItemsQuery:
    """The query string, or a 400 naming the parameter."""
    try:
        return ItemsQuery.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = str(first["loc"][0]) if first.get("loc") else "query"
        raise GatewayError(ErrorCode.INVALID_REQUEST, f"{param}: {first['msg']}", param=param) from None


def listed_item(response_id: str, index: int, item: dict[str, Any]) -> dict[str, Any]:
    """A stored input item in the list's shape: typed, with an id and a status; a message's
    string content as one part (`input_text`, or `output_text` for an assistant turn)."""
    kind = str(item.get("type") or "message")
    out = dict(item)
    out["type"] = kind
    out.setdefault("id", f"{_PREFIX.get(kind, 'item')}_{response_id.removeprefix('resp_')}_in{index}")
    out.setdefault("status", "completed")
    if kind == "message" and isinstance(out.get("content"), str):
        part = "output_text" if out.get("role") == "assistant" else "input_text"
        out["content"] = [{"type": part, "text": out["content"]}]
    return out


def items_page(response_id: str, items: list[dict[str, Any]], query: ItemsQuery) -> dict[str, Any]:
    """One page of the list, OpenAI's shape: `data` in `order`, after the `after` item, at most
    `limit` of them, with `first_id`, `last_id` and `has_more`. An `after` that names no item
    of this response is a 400 naming it."""
    listed = [listed_item(response_id, i, item) for i, item in enumerate(items)]
    if query.order == "desc":
        listed.reverse()
    start = 0
    if query.after is not None:
        ids = [item["id"] for item in listed]
        if query.after not in ids:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST,
                f"after: no input item {query.after!r} in response {response_id!r}",
                param="after",
            )
        start = ids.index(query.after) + 1
    page = listed[start : start + query.limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + query.limit < len(listed),
    }


def cannot_cancel() -> GatewayError:
    """What OpenAI answers for cancelling a response that was not created with background=true."""
    return GatewayError(ErrorCode.INVALID_REQUEST, "Cannot cancel a synchronous response.")


class InputItemList(BaseModel):
    """The answer of GET /v1/responses/{id}/input_items (for the OpenAPI description)."""

    model_config = ConfigDict(extra="forbid")

    object: Literal["list"]
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool
