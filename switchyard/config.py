"""The TOML config's schema: what each table may hold, checked once at start-up.

Placeholder while the models are written; see the next commit.
"""

from __future__ import annotations

# The retry budget: the most upstream attempts one request may make (the fallback chain's
# length). The router's `[router] max_attempts` default, and the worker's when a dispatch
# carries none.
DEFAULT_MAX_ATTEMPTS = 3
