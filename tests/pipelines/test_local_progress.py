"""What the local runner's output capture must survive: KFP's unlocked global swaps.

KFP's local runner runs the iterations of a ``ParallelFor`` in threads, and around each message
it swaps the root logger's handlers and ``builtins.print`` without a lock. A lost race sends a
task's status line to whatever handlers the root logger holds at that moment, and can leave
``print`` indented for the rest of the process. Both broke a CI run (a retrain's SUCCESS went
unreported; the CLI's ``study: DIR`` line came out indented), so both are reproduced here
directly, without depending on the race.
"""

from __future__ import annotations

import builtins
import logging
from pathlib import Path

from pipelines.local import _task_output_to

_SUCCESS = "Task \x1b[96m'curation-retrain'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m"


def test_a_status_line_reaching_the_root_logger_is_reported(tmp_path: Path) -> None:
    reported: list[str] = []
    with _task_output_to(tmp_path / "task.log", reported.append):
        logging.getLogger().info(_SUCCESS)  # KFP's stdout handler is away at this moment
        logging.getLogger("kfp.local").info("Task hello cache hit")
    assert reported == ["curation-retrain: SUCCESS", "hello: cached"]
    assert "finished with status" in (tmp_path / "task.log").read_text()


def test_a_status_line_printed_to_stdout_is_reported_once(tmp_path: Path) -> None:
    reported: list[str] = []
    with _task_output_to(tmp_path / "task.log", reported.append):
        print("some task output")
        print(_SUCCESS)
    assert reported == ["curation-retrain: SUCCESS"]


def test_print_is_restored_when_the_runner_leaves_it_swapped(tmp_path: Path) -> None:
    original = builtins.print

    def indented(*args: object, **kwargs: object) -> None:  # what KFP's indented_print installs
        original("    ", end="")
        original(*args, **kwargs)  # type: ignore[call-overload]

    logger = logging.getLogger()
    handlers, level = logger.handlers[:], logger.level
    with _task_output_to(tmp_path / "task.log", None):
        builtins.print = indented  # a thread's context exits after the one that saved it
    assert builtins.print is original
    assert logger.handlers == handlers and logger.level == level
