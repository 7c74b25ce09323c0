"""Child processes that never outlive their parent."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A `preexec_fn`: the child gets SIGTERM when its parent dies, even by SIGKILL (Linux).

    So a supervisor, a test run or a benchmark that is killed (a timeout, Ctrl-C twice) leaves
    no nats-server or service process behind holding ports and data folders."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def tied_to_parent() -> Callable[[], None] | None:
    """The `preexec_fn` for a child started here: `die_with_parent` from the main thread. The
    signal follows the parent *thread*, so a child started from a worker thread (which may
    end long before the process) is not tied."""
    return die_with_parent if threading.current_thread() is threading.main_thread() else None
