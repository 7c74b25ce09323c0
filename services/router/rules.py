"""Routing rules: request features, and the first configured rule they match. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from switchyard.catalog import Rule
from switchyard.tokens import estimate_prompt_tokens, has_images, last_user_text
from switchyard.v1 import invoke_pb2


@dataclass(frozen=True)
class Features:
    """What rules can look at, extracted once per request."""

    metadata: Mapping[str, str]
    prompt_tokens: int
    has_tools: bool
    has_images: bool
    last_user_text: str


def features_of(request: invoke_pb2.InvokeRequest) -> Features:
    return Features(
        metadata=dict(request.metadata),
        prompt_tokens=estimate_prompt_tokens(request),
        has_tools=len(request.tools) > 0,
        has_images=has_images(request),
        last_user_text=last_user_text(request),
    )


def matches(rule: Rule, requested: str, features: Features) -> bool:
    if "*" not in rule.applies_to and requested not in rule.applies_to:
        return False
    for key, allowed in rule.metadata.items():
        if features.metadata.get(key) not in allowed:
            return False
    if rule.min_prompt_tokens is not None and features.prompt_tokens < rule.min_prompt_tokens:
        return False
    if rule.max_prompt_tokens is not None and features.prompt_tokens > rule.max_prompt_tokens:
        return False
    if rule.tools is not None and features.has_tools != rule.tools:
        return False
    if rule.images is not None and features.has_images != rule.images:
        return False
    return not (
        rule.last_user_regex is not None and rule.last_user_regex.search(features.last_user_text) is None
    )


def first_match(rules: Sequence[Rule], requested: str, features: Features) -> Rule | None:
    """Rules are tried in configured order; the first that matches decides."""
    for rule in rules:
        if matches(rule, requested, features):
            return rule
    return None
