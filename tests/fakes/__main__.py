"""Run one fake upstream as its own process (benchmarks, manual tries).

    python -m tests.fakes openai --port 0 [--api-key sk-test] [--delay 0.05] [--chunk-delay 0.01]

Prints `READY <base_url>` on stdout once it listens, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import threading

from . import FAKES, Behavior


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes")
    parser.add_argument("provider", choices=sorted(FAKES))
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before response headers")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--text", default=Behavior.text)
    args = parser.parse_args()
    default = Behavior(text=args.text, delay_s=args.delay, chunk_delay_s=args.chunk_delay)
    fake = FAKES[args.provider](default=default, api_key=args.api_key).start(args.port, http="httptools")
    print(f"READY {fake.base_url}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    fake.stop()


if __name__ == "__main__":
    main()
