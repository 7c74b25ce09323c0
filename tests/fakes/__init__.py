"""Fake upstream LLM servers speaking each provider's real wire format, with fault injection.

    from tests.fakes import OpenAIFake, Behavior
    with OpenAIFake(api_key="sk-test") as fake:          # a thread, a free loopback port
        deployment_base_url = fake.base_url               # http://127.0.0.1:<port>/v1
        fake.behave(Behavior(status=429, retry_after="2"), times=1)   # next request only
        fake.behave(Behavior(delay_s=0.2), model="slow-model")         # per model
        fake.behave(Behavior(text="hi", chunk_delay_s=0.01))           # the default
        fake.requests[-1].body, fake.requests[-1].outcome              # what it saw / how it ended

Control over HTTP (for a fake run as a subprocess: `python -m tests.fakes openai --port 0`):
POST /_fake/behavior {"model"?: ..., "times"?: n, <Behavior fields>}, POST /_fake/reset,
GET /_fake/requests. See docs/providers.md#fake-upstreams.
"""

from .anthropic import AnthropicFake
from .base import Behavior, FakeUpstream, Recorded
from .gemini import GeminiFake
from .mistral import MistralFake
from .openai import OpenAIFake

FAKES: dict[str, type[FakeUpstream]] = {
    "openai": OpenAIFake,
    "openai_compat": OpenAIFake,
    "anthropic": AnthropicFake,
    "gemini": GeminiFake,
    "mistral": MistralFake,
}

__all__ = [
    "FAKES",
    "AnthropicFake",
    "Behavior",
    "FakeUpstream",
    "GeminiFake",
    "MistralFake",
    "OpenAIFake",
    "Recorded",
]
