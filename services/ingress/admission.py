"""Adaptive admission: a concurrency limit for the ingress driven by measured latency. Pure.

Under overload a gateway that admits everything serves nothing in time: every request waits
behind all the others, clients give up, and the work done for them is wasted. A fixed limit
(`max_in_flight`) is either too high to help or too low for a good day. This limit moves with
what the gateway measures, in the spirit of Netflix's concurrency-limits (Gradient2) and
Envoy's adaptive concurrency filter:

- The signal is the gateway's **own** time per request: the ingress's latency to the final
  frame minus the time the upstream calls took (the answer's attempts). A slow model or a long
  stream does not look like overload; queueing in the ingress, router or worker does.
- Samples are averaged per window (at least `window_s` and `min_samples`). A long-run average
  (an exponential average over about `long_windows` windows) is the baseline; it learns only
  from windows that were not judged overloaded, so a sustained overload never becomes normal.
- Each window: gradient = clamp(tolerance x max(baseline, floor) / window average, 0.5, 1).
  The new limit is limit x gradient + sqrt(limit) (Gradient2's queue allowance), smoothed:
  decreases at `down_smoothing` (fast: overload must be met within a few windows), increases
  at `up_smoothing`, and increases only while the requests in flight reach half the limit (a
  limit nobody pushes against is not evidence that more would be fine). A request that ended
  in a timeout counts with its whole latency: it is the strongest overload signal there is.
  A decrease starts from the requests that were in flight when that is below the limit, so a
  sudden overload meets a limit near what the gateway carries within a window or two.
- The limit stays within [min_limit, max_limit] and starts at max_limit: nothing is refused
  until the gateway's own latency says so.

The ingress refuses a request when its requests in flight reach the limit (edge.shed_reason):
503 with Retry-After, in the caller's dialect, before any bus message is sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AdmissionTuning:
    enabled: bool = True
    min_limit: int = 8
    max_limit: int = 2048
    # The gateway is judged overloaded when its own time per request averages more than
    # tolerance x max(its baseline, floor_ms) over a window.
    tolerance: float = 2.0
    # 50, not 25: a closed loop of 32 connections at the one-core maximum queues ~80 ms of its
    # own, and with 25 that was judged overload (refusals, each client waiting its Retry-After:
    # -10 % of the maximum, bench A/B 2026-12-07); a collapse is seconds, far past either.
    floor_ms: float = 50.0
    window_s: float = 0.1
    min_samples: int = 8
    long_windows: int = 600
    down_smoothing: float = 0.5
    up_smoothing: float = 0.2


@dataclass
class AdaptiveLimit:
    """The limit and what it learnt. `observe` each finished request; read `limit`."""

    tuning: AdmissionTuning = field(default_factory=AdmissionTuning)
    limit: float = 0.0
    baseline_ms: float = 0.0  # 0: not learnt yet
    _window_start: float = -1.0
    _sum_ms: float = 0.0
    _count: int = 0
    _peak_in_flight: int = 0
    windows: int = 0  # windows closed (tests and metrics read it)

    def __post_init__(self) -> None:
        if not self.limit:
            self.limit = float(self.tuning.max_limit)

    def admits(self, in_flight: int) -> bool:
        """May one more request start, with `in_flight` already admitted?"""
        return not self.tuning.enabled or in_flight < int(self.limit)

    def observe(self, own_ms: float, in_flight: int, now: float) -> None:
        """One request finished after `own_ms` of the gateway's own time (its whole latency
        when it timed out), with `in_flight` requests admitted at the time; `now` in seconds."""
        if not self.tuning.enabled:
            return
        if self._window_start < 0:
            self._window_start = now
        self._sum_ms += max(own_ms, 0.0)
        self._count += 1
        self._peak_in_flight = max(self._peak_in_flight, in_flight)
        if self._count >= self.tuning.min_samples and now - self._window_start >= self.tuning.window_s:
            self._close_window(now)

    def _close_window(self, now: float) -> None:
        t = self.tuning
        short = self._sum_ms / self._count
        peak = self._peak_in_flight
        self._window_start, self._sum_ms, self._count, self._peak_in_flight = now, 0.0, 0, 0
        self.windows += 1
        if not self.baseline_ms:
            self.baseline_ms = short
        reference = max(self.baseline_ms, t.floor_ms)
        gradient = max(0.5, min(1.0, t.tolerance * reference / short)) if short > 0 else 1.0
        if gradient >= 1.0:
            # Not overloaded: the baseline learns (Gradient2's long window), and the limit may grow.
            self.baseline_ms += (short - self.baseline_ms) * 2 / (t.long_windows + 1)
            if peak < self.limit / 2:
                return  # nobody pushed against the limit: no evidence for a higher one
            target = self.limit + math.sqrt(self.limit)
            smoothing = t.up_smoothing
            current = self.limit
        else:
            # Cut from what was in flight, not from a limit nobody reached: it starts at
            # max_limit, and stepping down from 2048 took ~10 windows while a queue of seconds
            # built under a sudden overload (issue 15).
            current = min(self.limit, max(float(peak), float(t.min_limit)))
            target = current * gradient + math.sqrt(current)
            smoothing = t.down_smoothing
        limit = current * (1 - smoothing) + target * smoothing
        self.limit = max(float(t.min_limit), min(float(t.max_limit), limit))


def own_time_ms(elapsed_ms: float, attempts: Iterable[tuple[float, float]]) -> float:
    """The gateway's own share of a request's latency: its latency minus the time from the
    first upstream call's start to the last one's end (`attempts`: (started_unix_ms,
    latency_ms) each; hedges overlap, so not their sum). Never below 0."""
    spans = [(start, start + latency) for start, latency in attempts if start]
    upstream_ms = max(end for _, end in spans) - min(start for start, _ in spans) if spans else 0.0
    return max(elapsed_ms - upstream_ms, 0.0)


def admission_tuning(settings: Any) -> AdmissionTuning:
    """The tuning from the SWITCHYARD_ADMISSION_* settings (the maximum is never above the
    fixed `max_in_flight`, which still applies on its own)."""
    return AdmissionTuning(
        enabled=settings.admission_adaptive,
        min_limit=min(settings.admission_min_limit, settings.max_in_flight),
        max_limit=min(settings.admission_max_limit or settings.max_in_flight, settings.max_in_flight),
        tolerance=settings.admission_tolerance,
        floor_ms=settings.admission_floor_ms,
        window_s=settings.admission_window_s,
    )
