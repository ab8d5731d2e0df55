"""SIGINT under the CLI's guard: raised as usual, recorded once an output is swapped in."""

import signal
import threading
from collections.abc import Iterator

import pytest

from sslmem.interrupts import guard, swapping_output


@pytest.fixture(autouse=True)
def python_sigint_handler() -> Iterator[None]:
    """Python's own SIGINT handler for each test, as under an interactive shell.

    A test runner started in the background (``cmd &`` in a script, nohup) inherits SIGINT
    *ignored*, and there :func:`guard` rightly leaves it alone (the last test).
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_interrupt_is_raised_before_a_swap_and_recorded_during_and_once_after() -> None:
    with guard() as state:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        with swapping_output():
            signal.raise_signal(signal.SIGINT)  # recorded: the swap is not cut in half
        assert state.committed and state.ignored_after_output
        with pytest.raises(KeyboardInterrupt):  # a second interrupt stops the command
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_failed_swap_commits_nothing_and_other_threads_swaps_do_not_count() -> None:
    with guard() as state:
        with pytest.raises(OSError), swapping_output():
            raise OSError("rename failed")
        worker = threading.Thread(target=lambda: swapping_output().__enter__())
        worker.start()
        worker.join()
        assert not state.committed
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


def test_guard_leaves_an_ignored_sigint_alone() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as for a background job
    with guard() as state:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        with swapping_output():
            signal.raise_signal(signal.SIGINT)  # ignored, as the caller chose
        assert not state.committed and not state.ignored_after_output
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
