"""Mistral chat completions (POST {base}/v1/chat/completions, base https://api.mistral.ai).

Mistral's API follows OpenAI's chat shape with a few differences, carried by its `Dialect`:
`max_tokens` and `random_seed` instead of `max_completion_tokens` and `seed`; tool_choice
"any" for "required"; no `stream_options` (unknown fields are rejected with 422) because every
stream's last chunk already carries `usage`; finish reason `model_length` means the context ran
out; embeddings at /v1/embeddings take `output_dimension` and no `user`. Errors come as {"object": "error", "message", "type", "code"} or, for 422, {"detail": [...]}.
"""

from __future__ import annotations

from ..embeddings import MISTRAL_EMBEDDINGS
from .openai import Adapter as OpenAIAdapter
from .openai import Dialect

MISTRAL = Dialect(
    name="mistral",
    path="/v1/chat/completions",
    max_tokens_field="max_tokens",
    seed_field="random_seed",
    stream_usage_option=False,
    required_tool_choice="any",
    embeddings=MISTRAL_EMBEDDINGS,
)


class Adapter(OpenAIAdapter):
    dialect = MISTRAL
    default_base_url = "https://api.mistral.ai"
