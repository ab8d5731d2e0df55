"""Shared pieces of the coordination tests: stores, injected clocks, thread races."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sslmem.config import RuntimeSettings
from sslmem.coordination.conditional_store import (
    ConditionalStore,
    S3ConditionalStore,
    open_conditional_store,
)
from tests.servers import S3Server


class FakeClock:
    """A clock that moves only when told (monotonic or wall, as injected)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def skewed(offset_s: float) -> Callable[[], float]:
    """A wall clock ``offset_s`` seconds off the real one."""
    return lambda: time.time() + offset_s


def local_store(root: Path) -> ConditionalStore:
    return open_conditional_store(root, RuntimeSettings())


def new_bucket(server: S3Server) -> str:
    bucket = f"coord-{secrets.token_hex(4)}"
    server.s3_store(bucket, create_bucket=True)
    return bucket


def s3_store(
    server: S3Server,
    bucket: str,
    clock: Callable[[], float] = time.time,
    *,
    timeout: float = 10.0,
    retries: int = 3,
) -> S3ConditionalStore:
    """A conditional store on ``bucket`` whose requests are signed by ``clock``."""
    return S3ConditionalStore(
        server.s3_store(bucket, "svc"),
        access_key=server.access_key,
        secret_key=server.secret_key,
        region="us-east-1",
        clock=clock,
        timeout=timeout,
        retries=retries,
    )


def race(n_threads: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` in ``n_threads`` threads released at the same instant."""
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            work(i)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
