"""Allocator tuning: freed tensor memory is reused instead of being faulted in again."""

import subprocess
import sys

import pytest

# Allocates and frees a 64 MiB tensor 20 times; prints the minor page faults that took.
_CHILD = """
import resource, sys, torch
from sslmem.runtime import keep_freed_memory_in_heap
applied = keep_freed_memory_in_heap() if sys.argv[1] == "tuned" else None
torch.ones(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    block = torch.ones(16 * 2**20)
    del block
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_keeping_the_heap_cuts_page_faults_of_repeated_large_tensors() -> None:
    applied, tuned = _faults("tuned")
    _, untuned = _faults("untuned")
    assert applied == "True"
    # Untuned: each 64 MiB block is mmapped afresh, 16,384 faults a time (~330k in all).
    assert untuned > 20 * 16_000
    assert tuned < untuned / 2
