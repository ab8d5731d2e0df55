"""``sslmem demo`` (``make demo``): ``sslmem run``, leaving two versions to compare.

The first demo into an output directory registers and scores version 1, which becomes the
champion (the model had none), then trains a second candidate of the same recipe with the
next seed -- the reference, split and evaluations come from the cache -- and judges it against
the champion: the terminal shows a judgement, and the MLflow UI two versions side by side.
Every later demo into the same directory is one run, judged against the champion.
"""

from __future__ import annotations

import argparse

from sslmem.cli.run import add_arguments, run_once

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    """``sslmem run``; when it crowned the first champion, a second seed to judge against it."""
    from sslmem.tracking import tags as T

    code, first = run_once(args)
    if code != 0 or first.result is None or first.champion is None:
        return code
    if not first.champion.became_champion:
        return code
    provenance = T.parse_provenance(first.result.candidate.tags)
    seeds = provenance.get(T.CANDIDATE_SEEDS) or [0]
    # The same reference (its seeds pinned: they default to the candidate seeds), so the
    # reference comes from the cache and both versions are scored against one reference.
    references = provenance.get(T.REFERENCE_SEEDS) or seeds
    following = [
        f"pipeline.candidate_seeds=[{max(int(s) for s in seeds) + 1}]",
        f"pipeline.reference_seeds=[{','.join(str(int(s)) for s in references)}]",
    ]
    print(
        "\n=== a second version to compare with the champion: the same recipe and reference, "
        f"--set {' --set '.join(following)} ===\n",
        flush=True,
    )
    return run_once(args, following)[0]
