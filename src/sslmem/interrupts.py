"""Ctrl-C once a command's output is complete does not turn the command into a failure.

A report directory becomes complete with two renames (:func:`sslmem.reporting.outdir.replaced_dir`).
A ``KeyboardInterrupt`` raised between them, or after them while the command prints its
verdict, would make ``sslmem`` exit 130 ("interrupted") with the new report on disk, and one
raised right after the second rename would even undo a swap that had happened. So while the
``sslmem`` entry point holds :func:`guard`, SIGINT is *recorded* instead of raised from the
moment a swap begins (:func:`swapping_output`):

- the swap fails: the renames are undone and its error propagates, as without an interrupt;
- the swap succeeds: the output is committed; the command finishes its little remaining work
  and exits with its own status (a verdict exit included). A second SIGINT after the commit
  stops it at once (130), for a command whose remaining work hangs.

Only the main thread's swaps count (the service scores in worker threads; its Ctrl-C must keep
stopping it), and without the guard (library use, pipeline steps) nothing changes. The handler
only sets fields: no I/O in a signal handler.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType


@dataclass
class InterruptState:
    """What happened to SIGINT under one :func:`guard`.

    Attributes:
        swapping: An output swap is in progress (interrupts are recorded).
        committed: An output was swapped in (the first later interrupt is recorded).
        recorded: Interrupts recorded instead of raised.
    """

    swapping: bool = False
    committed: bool = False
    recorded: int = 0

    @property
    def ignored_after_output(self) -> bool:
        """Whether an interrupt came once the output was committed (and did not stop it)."""
        return self.committed and self.recorded > 0


_state: InterruptState | None = None  # the active guard's (main thread only)


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    state = _state
    if state is not None and (state.swapping or (state.committed and not state.recorded)):
        state.recorded += 1
        return
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def guard() -> Iterator[InterruptState]:
    """For the block (a CLI command), an interrupt during or after an output swap is recorded.

    A no-op (its state never records) outside the main thread, or where SIGINT is not Python's
    default handler (e.g. ignored, as for a background job): that choice is the caller's.
    """
    global _state
    state = InterruptState()
    if not _main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield state
        return
    previous, _state = _state, state
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _state = previous


@contextlib.contextmanager
def swapping_output() -> Iterator[None]:
    """Wrap the renames that make an output complete; on a normal exit it is committed.

    Under :func:`guard`, SIGINT is recorded (not raised) inside the block and, after it, once.
    """
    state = _state
    if state is None or not _main_thread():
        yield
        return
    state.swapping = True
    try:
        yield
        state.committed = True
    finally:
        state.swapping = False
