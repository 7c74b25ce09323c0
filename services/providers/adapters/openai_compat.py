"""Any OpenAI-compatible server: vLLM, Ollama (/v1), Groq, Together, LM Studio, Azure OpenAI.

The deployment's `base_url` is the API root the server documents (it ends in `/v1` for most:
`http://localhost:8000/v1` for vLLM, `http://localhost:11434/v1` for Ollama,
`https://api.groq.com/openai/v1`, `https://api.together.xyz/v1`). `max_tokens` is sent rather
than OpenAI's newer `max_completion_tokens`, because that is the field every such server reads.

Azure OpenAI: base_url `https://<resource>.openai.azure.com/openai/deployments/<name>` with
options `auth_header = "api-key"` and `query = {"api-version" = "2024-10-21"}` (or the v1 API:
base_url `https://<resource>.openai.azure.com/openai/v1`, default bearer auth).

A key is optional (local servers need none). When a server reports no usage, usage is estimated
(switchyard.tokens) rather than billed as zero.
"""

from __future__ import annotations

from ..embeddings import COMPAT_EMBEDDINGS
from .openai import Adapter as OpenAIAdapter
from .openai import Dialect

COMPAT = Dialect(name="openai_compat", max_tokens_field="max_tokens", embeddings=COMPAT_EMBEDDINGS)


class Adapter(OpenAIAdapter):
    dialect = COMPAT
    default_base_url = "http://127.0.0.1:8000/v1"
