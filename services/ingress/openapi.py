"""The OpenAPI 3.1 description of the ingress's HTTP API, built from the same pydantic models
that validate the requests and describe the responses. Served at GET /openapi.json; a test
compares its paths and methods with the app's routes so it cannot drift."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from switchyard.vocab import StrategyPreset

from . import (
    admin,
    anthropic_api,
    completions_api,
    embeddings_api,
    hints,
    native,
    openai_api,
    response_items,
    responses_api,
)

REF = "#/components/schemas/{model}"
SSE = {"text/event-stream": {"schema": {"type": "string"}}}
# What x-switchyard-strategy accepts (hints.parse_strategy), written so that a value matching
# it is always accepted: a preset, or weights whose first one is positive.
_WEIGHT = r"(latency|cost|quality)="
STRATEGY_HEADER_PATTERN = (
    "^("
    + "".join(f"{name}|" for name in StrategyPreset)
    + _WEIGHT
    + r"(0\.[0-9]*[1-9]|[1-9][0-9]?(\.[0-9]+)?)(,"
    + _WEIGHT
    + r"[0-9]{1,2}(\.[0-9]+)?){0,2})$"
)


def _components() -> tuple[dict[type[BaseModel], str], dict[str, Any]]:
    named: dict[str, type[BaseModel]] = {
        "InvokeBody": native.InvokeBody,
        "InvokeResult": native.InvokeResult,
        "NativeError": native.NativeErrorResponse,
        "ChatCompletionRequest": openai_api.ChatCompletionRequest,
        "ChatCompletion": openai_api.ChatCompletion,
        "ChatCompletionChunk": openai_api.ChatCompletionChunk,
        "OpenAIError": openai_api.OpenAIErrorResponse,
        "OpenAIModel": openai_api.OpenAIModel,
        "OpenAIModelList": openai_api.OpenAIModelList,
        "MessagesRequest": anthropic_api.MessagesRequest,
        "Message": anthropic_api.Message,
        "AnthropicError": anthropic_api.AnthropicErrorResponse,
        "AnthropicModel": anthropic_api.AnthropicModel,
        "AnthropicModelList": anthropic_api.AnthropicModelList,
        "ResponsesRequest": responses_api.ResponsesRequest,
        "ResponseObject": responses_api.ResponseObject,
        "ResponseDeleted": responses_api.ResponseDeleted,
        "ResponseInputItemList": response_items.InputItemList,
        "EmbeddingsRequest": embeddings_api.EmbeddingsRequest,
        "EmbeddingList": embeddings_api.EmbeddingList,
        "CompletionRequest": completions_api.CompletionRequest,
        "TextCompletion": completions_api.TextCompletion,
        "CountTokensRequest": anthropic_api.CountTokensRequest,
        "MessageTokensCount": anthropic_api.MessageTokensCount,
        "ProjectIn": admin.ProjectIn,
        "ProjectPatch": admin.ProjectPatch,
        "AgentIn": admin.AgentIn,
        "AgentPatch": admin.AgentPatch,
        "KeyIn": admin.KeyIn,
        "KeyPatch": admin.KeyPatch,
        "BudgetIn": admin.BudgetIn,
    }
    keys, schema = models_json_schema([(model, "validation") for model in named.values()], ref_template=REF)
    defs: dict[str, Any] = schema.get("$defs", {})
    refs = {model: keys[(model, "validation")]["$ref"] for model in named.values()}
    return refs, defs


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _errors(ref: str, statuses: dict[str, str]) -> dict[str, Any]:
    return {status: _json(ref, text) for status, text in statuses.items()}


# What can go wrong on a model call, by HTTP status, per API (docs/api.md has the full tables).
NATIVE_ERRORS = {
    "400": "Invalid request (bad JSON, a field out of range, a malformed routing header).",
    "401": "Missing or unknown API key.",
    "402": "A budget cap would be crossed.",
    "403": "The API key may not do this.",
    "404": "Unknown model, route or alias.",
    "413": "The request is too large.",
    "422": "A provider could not process the request.",
    "429": "Rate limited (see Retry-After).",
    "500": "Internal error.",
    "502": "Every upstream attempt failed.",
    "503": "No worker or budget authority available right now (see Retry-After).",
    "504": "The request took longer than its deadline.",
}
OPENAI_ERRORS = {
    "400": "Invalid request.",
    "401": "Missing or unknown API key.",
    "403": "The API key may not do this.",
    "404": "Unknown model (code model_not_found).",
    "413": "The request is too large.",
    "429": "Budget spent (code insufficient_quota) or rate limited (code rate_limit_exceeded).",
    "500": "Internal error.",
    "502": "Every upstream attempt failed.",
    "503": "No capacity right now.",
    "504": "The request took longer than its deadline.",
}
ANTHROPIC_ERRORS = {
    "400": "invalid_request_error.",
    "401": "authentication_error.",
    "403": "permission_error.",
    "404": "not_found_error (unknown model).",
    "413": "request_too_large.",
    "429": "rate_limit_error (rate limited or budget spent).",
    "500": "api_error.",
    "502": "api_error: every upstream attempt failed.",
    "504": "timeout_error.",
    "529": "overloaded_error: no capacity right now.",
}


# The admin API (docs/budgets.md) answers errors in the neutral shape.
ADMIN_ERRORS = {
    "400": "Invalid body or parameter.",
    "401": "Missing or wrong admin token.",
    "404": "No such project, agent, key or budget.",
    "409": "Already exists, or changed concurrently (try again).",
    "503": "The admin API or the budget authority is not ready (see Retry-After).",
}


def _admin_paths(ref: dict[type[BaseModel], str]) -> dict[str, Any]:
    """Every /admin/v1 route; bodies are the admin models, answers JSON objects."""
    error = ref[native.NativeErrorResponse]
    record = {
        "description": "The record(s).",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }

    def op(
        summary: str,
        body: type[BaseModel] | None = None,
        params: tuple[dict, ...] = (),
        created: bool = False,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "summary": summary,
            "security": [{"bearer": []}],
            "responses": {"201" if created else "200": record, **_errors(error, ADMIN_ERRORS)},
        }
        if params:
            spec["parameters"] = list(params)
        if body is not None:
            spec["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": ref[body]}}},
            }
        return spec

    def path(name: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}

    def query(name: str, required: bool = False) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": required, "schema": {"type": "string"}}

    p = admin.PREFIX
    project, agent, key_id = path("project"), path("agent"), path("key_id")
    budget_key = (query("scope", True), query("scope_id", True), query("period", True))
    return {
        f"{p}/projects": {
            "get": op("List projects"),
            "post": op("Create a project", admin.ProjectIn, created=True),
        },
        f"{p}/projects/{{project}}": {
            "get": op("One project", params=(project,)),
            "patch": op("Change a project", admin.ProjectPatch, (project,)),
            "delete": op(
                "Delete a project: revokes its keys, deletes its agents and budgets", params=(project,)
            ),
        },
        f"{p}/projects/{{project}}/agents": {
            "get": op("List a project's agents", params=(project,)),
            "post": op("Create an agent", admin.AgentIn, (project,), created=True),
        },
        f"{p}/projects/{{project}}/agents/{{agent}}": {
            "patch": op("Change an agent", admin.AgentPatch, (project, agent)),
            "delete": op("Delete an agent", params=(project, agent)),
        },
        f"{p}/keys": {
            "get": op("List API keys (never their secrets)", params=(query("project"),)),
            "post": op("Issue an API key (the secret is shown once)", admin.KeyIn, created=True),
        },
        f"{p}/keys/{{key_id}}": {
            "get": op("One API key", params=(key_id,)),
            "patch": op("Change an API key", admin.KeyPatch, (key_id,)),
            "delete": op("Revoke an API key", params=(key_id,)),
        },
        f"{p}/budgets": {
            "get": op("List budgets", params=(query("project"),)),
            "put": op("Set a budget cap", admin.BudgetIn),
            "delete": op("Remove a budget cap", params=budget_key),
        },
        f"{p}/spend": {
            "get": op("Spend against caps, as the authority counts it", params=(query("project"),))
        },
        f"{p}/usage": {
            "get": op(
                "Any project's usage report (as GET /v1/usage)",
                params=(query("project", required=True), query("period")),
            )
        },
    }


def _hint_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": hints.ROUTE_HEADER,
            "in": "header",
            "required": False,
            "description": "Route, alias or <provider>/<model> to use; overrides the body's model.",
            "schema": {"type": "string", "maxLength": hints.MAX_MODEL_NAME},
        },
        {
            "name": hints.STRATEGY_HEADER,
            "in": "header",
            "required": False,
            "description": f"A preset ({', '.join(StrategyPreset)}) or weights like "
            "'latency=0.5,cost=0.3,quality=0.2' (not all zero; anything else is a 400).",
            "schema": {"type": "string", "pattern": STRATEGY_HEADER_PATTERN},
        },
    ]


def _model_call(
    summary: str, body_ref: str, result_ref: str, stream_note: str, error_ref: str, errors: dict[str, str]
) -> dict[str, Any]:
    """A POST that answers JSON, or SSE when it streams (`stream_note`; "" for one that never does)."""
    if stream_note:
        ok = _json(result_ref, "The answer (when `stream` is false).")
        ok["content"].update(SSE)
        ok["description"] += " " + stream_note
    else:
        ok = _json(result_ref, "The answer.")
    return {
        "post": {
            "summary": summary,
            "parameters": _hint_parameters(),
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": body_ref}}},
            },
            "responses": {"200": ok, **_errors(error_ref, errors)},
        }
    }


def _stored_response(ref: dict[type[BaseModel], str], error_ref: str) -> dict[str, Any]:
    """GET and DELETE of a stored Responses API answer (the caller's project only)."""
    param = [{"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    missing = _json(error_ref, "No such stored response in this project (never stored, expired or deleted).")
    return {
        "get": {
            "summary": "A stored response",
            "parameters": param,
            "responses": {"200": _json(ref[responses_api.ResponseObject], "The response."), "404": missing},
        },
        "delete": {
            "summary": "Delete a stored response",
            "parameters": param,
            "responses": {"200": _json(ref[responses_api.ResponseDeleted], "Deleted."), "404": missing},
        },
    }


def _stored_response_parts(ref: dict[type[BaseModel], str], error_ref: str) -> dict[str, Any]:
    """A stored response's input items (paginated) and its cancel (always refused: no response
    the gateway runs is a background one)."""
    param = {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}
    query = [
        {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": response_items.MAX_LIMIT}},
        {"name": "order", "in": "query", "required": False, "schema": {"enum": ["asc", "desc"]}},
    ]  # fmt: skip
    missing = _json(error_ref, "No such stored response in this project (never stored, expired or deleted).")
    return {
        "/v1/responses/{response_id}/input_items": {
            "get": {
                "summary": "A stored response's input items, a page at a time",
                "parameters": [param, *query],
                "responses": {
                    "200": _json(ref[response_items.InputItemList], "A page of input items."),
                    "400": _json(error_ref, "A bad query parameter."),
                    "404": missing,
                },
            }
        },
        "/v1/responses/{response_id}/cancel": {
            "post": {
                "summary": "Cancel a background response (none exist here: refused)",
                "parameters": [param],
                "responses": {
                    "400": _json(error_ref, "Cannot cancel a synchronous response."),
                    "404": missing,
                },
            }
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    refs, schemas = _components()
    ref = {model: r for model, r in refs.items()}
    openai_err = ref[openai_api.OpenAIErrorResponse]
    paths: dict[str, Any] = {
        "/llm.invoke": _model_call(
            "Invoke a model (the native, reference API)",
            ref[native.InvokeBody],
            ref[native.InvokeResult],
            "With `stream: true`: SSE `chunk` events, then one `final` (an InvokeResult) or `error` event.",
            ref[native.NativeErrorResponse],
            NATIVE_ERRORS,
        ),
        "/v1/chat/completions": _model_call(
            "OpenAI-compatible chat completion",
            ref[openai_api.ChatCompletionRequest],
            ref[openai_api.ChatCompletion],
            "With `stream: true`: `data:` events each holding a ChatCompletionChunk, then `data: [DONE]`.",
            openai_err,
            OPENAI_ERRORS,
        ),
        "/v1/messages": _model_call(
            "Anthropic-compatible Messages API",
            ref[anthropic_api.MessagesRequest],
            ref[anthropic_api.Message],
            "With `stream: true`: message_start, content_block_start/delta/stop, message_delta, "
            "message_stop events (and `error`).",
            ref[anthropic_api.AnthropicErrorResponse],
            ANTHROPIC_ERRORS,
        ),
        "/v1/responses": _model_call(
            "OpenAI-compatible Responses API (any provider; docs/api.md says what is translated)",
            ref[responses_api.ResponsesRequest],
            ref[responses_api.ResponseObject],
            "With `stream: true`: OpenAI's typed events (`event:` and `data:` with `type` and "
            "`sequence_number`): response.created, response.in_progress, output items and their "
            "deltas, then response.completed (or response.incomplete, or response.failed).",
            openai_err,
            OPENAI_ERRORS,
        ),
        "/v1/responses/{response_id}": _stored_response(ref, openai_err),
        **_stored_response_parts(ref, openai_err),
        "/v1/embeddings": _model_call(
            "OpenAI-compatible embeddings (routed among the catalog's embedding deployments)",
            ref[embeddings_api.EmbeddingsRequest],
            ref[embeddings_api.EmbeddingList],
            "",
            openai_err,
            OPENAI_ERRORS,
        ),
        "/v1/completions": _model_call(
            "OpenAI legacy text completion, run as a chat completion",
            ref[completions_api.CompletionRequest],
            ref[completions_api.TextCompletion],
            "With `stream: true`: `data:` events each holding a text_completion chunk, then `data: [DONE]`.",
            openai_err,
            OPENAI_ERRORS,
        ),
        "/v1/messages/count_tokens": _model_call(
            "Anthropic-compatible token count: exact on Anthropic deployments, else the gateway's "
            "estimate (switchyard.estimated)",
            ref[anthropic_api.CountTokensRequest],
            ref[anthropic_api.MessageTokensCount],
            "",
            ref[anthropic_api.AnthropicErrorResponse],
            ANTHROPIC_ERRORS,
        ),
        "/v1/models": {
            "get": {
                "summary": "Every name `model` can take: routes, aliases, <provider>/<model>",
                "parameters": [_anthropic_version()],
                "responses": {
                    "200": {
                        "description": "OpenAI's list shape; Anthropic's when `anthropic-version` is sent.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "anyOf": [
                                        {"$ref": ref[openai_api.OpenAIModelList]},
                                        {"$ref": ref[anthropic_api.AnthropicModelList]},
                                    ]
                                }
                            }
                        },
                    }
                },
            }
        },
        "/v1/models/{model}": {
            "get": {
                "summary": "One model name",
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}},
                    _anthropic_version(),
                ],
                "responses": {
                    "200": {
                        "description": "OpenAI's model shape; Anthropic's when `anthropic-version` is sent.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "anyOf": [
                                        {"$ref": ref[openai_api.OpenAIModel]},
                                        {"$ref": ref[anthropic_api.AnthropicModel]},
                                    ]
                                }
                            }
                        },
                    },
                    "404": {
                        "description": "Unknown model (Anthropic's error shape when `anthropic-version` is sent).",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "anyOf": [
                                        {"$ref": openai_err},
                                        {"$ref": ref[anthropic_api.AnthropicErrorResponse]},
                                    ]
                                }
                            }
                        },
                    },
                },
            }
        },
        "/v1/requests/{request_id}": {
            "get": {
                "summary": "One request's ledger row (rationale, attempts, tokens, cost)",
                "parameters": [
                    {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "The row, column by column.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(
                        ref[native.NativeErrorResponse],
                        {
                            "404": "No row for this id (yet).",
                            "500": "The ledger query failed.",
                            "503": "The ledger did not answer.",
                        },
                    ),
                },
            }
        },
        "/v1/usage": {
            "get": {
                "summary": "The caller's project's spend, caps, headroom, burn rates, projected "
                "exhaustion and roll-ups per agent and run (docs/budgets.md)",
                "parameters": [
                    {
                        "name": "period",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["day", "month", "total"], "default": "month"},
                    },
                    {
                        "name": "project",
                        "in": "query",
                        "required": False,
                        "description": "Only the key's own project may be named.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The usage report.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(
                        ref[native.NativeErrorResponse],
                        {
                            "400": "An unknown period.",
                            "403": "Another project's usage.",
                            "503": "The budget authority or the ledger did not answer.",
                        },
                    ),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This description",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "responses": {"200": _plain_object("The process is up.", {"status": {"const": "ok"}})},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness",
                "responses": {
                    "200": _plain_object("Ready to take requests.", {"ready": {"type": "boolean"}}),
                    "503": _plain_object("Starting or draining.", {"ready": {"type": "boolean"}}),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    for public in ("/openapi.json", "/healthz", "/readyz", "/metrics"):
        paths[public]["get"]["security"] = []
    paths.update(_admin_paths(ref))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Switchyard",
            "version": "1",
            "description": "An AI API gateway: the native API, OpenAI- and Anthropic-compatible "
            "endpoints, one routing path. Routing hints and errors: docs/api.md.",
        },
        "paths": paths,
        # Every API call needs a key (either header); the public paths below say `security: []`.
        "security": [{"bearer": []}, {"apiKey": []}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }


def _anthropic_version() -> dict[str, Any]:
    return {
        "name": "anthropic-version",
        "in": "header",
        "required": False,
        "description": "Sent by Anthropic SDKs; selects Anthropic's response shape.",
        "schema": {"type": "string"},
    }


def _plain_object(description: str, properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return {"description": description, "content": {"application/json": {"schema": schema}}}
