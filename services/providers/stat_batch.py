"""What a worker's provider stats of one interval become on the bus. Pure.

A stat per upstream attempt was one message per request to every router and the budget
authority. The worker now gathers an interval's stats (`SWITCHYARD_WORKER_STATS_S`) and sends
the routers all of them in one `ProviderStatBatch` (health samples, in-flight release), and the
budget authority only what it acts on (`budget_digest`): a provider's own rate-limit reading
and its 429s, per deployment.
"""

from __future__ import annotations

from switchyard.errors import ErrorCode
from switchyard.v1 import events_pb2


def budget_digest(stats: list[events_pb2.ProviderStat]) -> list[events_pb2.ProviderStat]:
    """Per deployment, the newest stat with rate-limit headers (each reading is the provider's
    whole count of what is left, so the newest supersedes the others) and the 429 with the
    longest Retry-After (the bucket is emptied until then). Stats with neither: nothing."""
    readings: dict[str, events_pb2.ProviderStat] = {}
    refusals: dict[str, events_pb2.ProviderStat] = {}
    for stat in stats:
        if stat.HasField("rate_limits"):
            newest = readings.get(stat.deployment_id)
            if newest is None or stat.ts_unix_ms >= newest.ts_unix_ms:
                readings[stat.deployment_id] = stat
        if stat.http_status == 429 or stat.error_code == ErrorCode.RATE_LIMITED:
            longest = refusals.get(stat.deployment_id)
            if longest is None or stat.retry_after_ms > longest.retry_after_ms:
                refusals[stat.deployment_id] = stat
    out = list(readings.values())
    out += [stat for dep, stat in refusals.items() if readings.get(dep) is not stat]
    return out
