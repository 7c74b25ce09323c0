"""Prompt-token estimation before a call (budget reservations, cost scoring, rules).

Providers report exact usage afterwards; a budget reservation is made before, so the estimate
must not under-count, or a cap can be overshot (docs/budgets.md). Each deployment is estimated
with the counter that fits its provider:

- `o200k_base` / `cl100k_base`: OpenAI's own BPE encodings (OpenAI-family deployments), from
  the `bpe-openai` package, which ships both encodings inside its wheel: nothing is fetched at
  import or at run time (tiktoken alone would download its files on first use). Loaded lazily,
  once per process (`warm_up` at service start keeps the ~0.2 s load off the first request).
- `pessimistic` (every other provider, whose tokenizers ship no local files): an upper-leaning
  count. ASCII at 3 characters per token (English runs at about 4-4.5 on current tokenizers,
  code at about 3-3.5); each non-ASCII character at its UTF-8 length minus one (accented Latin,
  Cyrillic, Greek, Arabic: 1 token; CJK, Devanagari, Thai: 2; emoji: 3), where real tokenizers
  give at most about one token per CJK character. Byte-level BPE never exceeds one token per
  UTF-8 byte, so only ASCII text denser than 3 characters per token (random strings, base64,
  long digit runs) can be under-counted, by at most 3x the ASCII part.
- `chars4`: the ~4 characters per token rule of thumb, for rules and ranking (where speed
  matters and a small error is harmless).
- `demo`: the built-in demo provider bills the `chars4` prompt estimate and one token per
  streamed word, so on demo deployments the estimate is exact.

Each message adds a few framing tokens; the pessimistic counter also adds the hidden system
prompt some providers prepend when tools are offered.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from functools import cache
from typing import Protocol

from switchyard.v1 import invoke_pb2

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 765  # OpenAI's high-detail 512px tile estimate; a safe upper-middle guess
REPLY_PRIMING = 3
# Anthropic documents 313-346 extra system-prompt tokens when tools are offered.
TOOLS_SYSTEM_PROMPT_TOKENS = 400
PESSIMISTIC_ASCII_CHARS_PER_TOKEN = 3

CHARS4 = "chars4"
DEMO = "demo"
PESSIMISTIC = "pessimistic"
O200K = "o200k_base"
CL100K = "cl100k_base"
TOKENIZERS = (CHARS4, DEMO, PESSIMISTIC, O200K, CL100K)

# OpenAI models still on cl100k_base (GPT-4 and GPT-3.5 before gpt-4o; the first embeddings).
_CL100K_MODELS = re.compile(r"^(gpt-4(?!o|\.|-?5)|gpt-3\.5|text-embedding-(3|ada-002))")


class _Counter(Protocol):
    def count(self, text: str) -> int: ...


def tokenizer_for(adapter: str, model: str) -> str:
    """Which counter estimates prompts for a deployment (its adapter and upstream model)."""
    if adapter == "demo":
        return DEMO  # the demo provider bills the chars4 estimate itself
    if adapter == "openai":
        return CL100K if _CL100K_MODELS.match(model) else O200K
    return PESSIMISTIC


@cache
def _bpe(encoding: str) -> _Counter:
    # Imported here: the extension maps ~70 MB, which services that never estimate skip. The
    # Rust binding counts without building the token list; the package is pinned, as this
    # module is not its documented API (bpe_openai.get_encoding(...).encode is, and slower).
    with warnings.catch_warnings():
        # It reads its bundled .tiktoken.gz with importlib.resources.open_binary (deprecated).
        warnings.simplefilter("ignore", DeprecationWarning)
        from bpe_openai import _bindings

        return _bindings.tokenizer_for_encoding(encoding)


def warm_up(tokenizers: set[str] | list[str]) -> None:
    """Load the BPE encodings these tokenizers need now, not on the first request."""
    for name in tokenizers:
        if name in (O200K, CL100K):
            _bpe(name)


def estimate_text_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def pessimistic_text_tokens(text: str) -> int:
    """See the module docstring: ASCII at 3 characters per token, each non-ASCII character at
    its UTF-8 length minus one (computed in C: no per-character Python loop)."""
    per = PESSIMISTIC_ASCII_CHARS_PER_TOKEN
    if text.isascii():
        return (len(text) + per - 1) // per
    ascii_chars = len(text.encode("ascii", "ignore"))
    extra_bytes = len(text.encode("utf-8", "surrogatepass")) - len(text)  # sum of (length - 1)
    return (ascii_chars + per - 1) // per + extra_bytes


def text_counter(tokenizer: str) -> Callable[[str], int]:
    """The function that counts one text's tokens for `tokenizer`."""
    if tokenizer in (CHARS4, DEMO):
        return estimate_text_tokens
    if tokenizer == PESSIMISTIC:
        return pessimistic_text_tokens
    if tokenizer in (O200K, CL100K):
        counter = _bpe(tokenizer)
        return lambda text: counter.count(text) if text else 0
    raise ValueError(f"unknown tokenizer {tokenizer!r}; one of {', '.join(TOKENIZERS)}")


def estimate_prompt_tokens(request: invoke_pb2.InvokeRequest, tokenizer: str = CHARS4) -> int:
    count = text_counter(tokenizer)
    if request.kind == invoke_pb2.InvokeRequest.KIND_EMBEDDING:
        # Embeddings bill each input's own tokens, with no message framing.
        return sum(count(text) for text in request.embedding.inputs)
    total = REPLY_PRIMING
    for message in request.messages:
        total += TOKENS_PER_MESSAGE
        for part in message.content:
            if part.HasField("image"):
                total += TOKENS_PER_IMAGE
            else:
                total += count(part.text)
        for call in message.tool_calls:
            total += count(call.name) + count(call.arguments_json)
    for tool in request.tools:
        total += count(tool.name + tool.description + tool.parameters_json)
    if request.tools and tokenizer == PESSIMISTIC:
        total += TOOLS_SYSTEM_PROMPT_TOKENS
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
