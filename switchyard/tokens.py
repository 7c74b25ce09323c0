"""Prompt-token estimation before a call (budget reservations, cost scoring).

Providers report exact usage afterwards; this estimate only has to be cheap and a little
pessimistic. ~4 characters per token is the published rule of thumb for English text on the
BPE tokenizers of OpenAI, Anthropic and Google; each message adds a few framing tokens.
"""

from __future__ import annotations

from switchyard.v1 import invoke_pb2

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 765  # OpenAI's high-detail 512px tile estimate; a safe upper-middle guess


def estimate_text_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def estimate_prompt_tokens(request: invoke_pb2.InvokeRequest) -> int:
    total = 3  # reply priming
    for message in request.messages:
        total += TOKENS_PER_MESSAGE
        for part in message.content:
            if part.HasField("image"):
                total += TOKENS_PER_IMAGE
            else:
                total += estimate_text_tokens(part.text)
        for call in message.tool_calls:
            total += estimate_text_tokens(call.name) + estimate_text_tokens(call.arguments_json)
    for tool in request.tools:
        total += estimate_text_tokens(tool.name + tool.description + tool.parameters_json)
    return total


def message_text(message: invoke_pb2.Message) -> str:
    return "".join(part.text for part in message.content if part.HasField("text"))


def last_user_text(request: invoke_pb2.InvokeRequest) -> str:
    for message in reversed(request.messages):
        if message.role == invoke_pb2.ROLE_USER:
            return message_text(message)
    return ""


def has_images(request: invoke_pb2.InvokeRequest) -> bool:
    return any(part.HasField("image") for m in request.messages for part in m.content)
