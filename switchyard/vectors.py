"""Embedding vectors as OpenAI's base64: little-endian float32, packed. Pure.

Providers return float32 vectors; the contract carries them as float32 (`Embedding.values`), so
a vector decoded from a provider's base64 and encoded again for the caller is the same bytes.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence


def pack_base64(values: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def unpack_base64(text: str) -> tuple[float, ...]:
    """ValueError when `text` is not base64 of whole float32 values."""
    packed = base64.b64decode(text, validate=True)
    if len(packed) % 4:
        raise ValueError("not a whole number of float32 values")
    return struct.unpack(f"<{len(packed) // 4}f", packed)
