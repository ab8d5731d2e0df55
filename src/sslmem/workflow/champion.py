"""Judge a local run's version against the champion (``sslmem run``, where no service runs).

On a cluster the scoring service judges every scored version against the version holding the
champion alias (:mod:`sslmem.workflow.score_version`, reconcile). ``sslmem run`` has no
service: after its pipeline scored the candidate, :func:`judge_run_version` is the one writer
of that version's judgement (and its description, :mod:`sslmem.tracking.description`), through
the same :func:`~sslmem.workflow.judge.judge_registered_version` under the same claim.

A model without a champion gets one: the first scored version becomes it, so the next run
has something to be judged against (that is how ``make demo`` leaves a comparison).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sslmem.config import RuntimeSettings
from sslmem.tracking import tags as T
from sslmem.workflow._common import configure_tracking, process_settings
from sslmem.workflow.judge import champion_version, judge_registered_version
from sslmem.workflow.scoring_settings import lease_settings_from_env

if TYPE_CHECKING:
    from sslmem.coordination.settings import LeaseSettings
    from sslmem.memorization.judgement import Judgement, JudgementPolicy

__all__ = ["ChampionJudgement", "LocalJudgeSettings", "judge_run_version", "source_runs"]

logger = logging.getLogger(__name__)

DEFAULT_CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class LocalJudgeSettings:
    """What judging needs (:class:`~sslmem.workflow.scoring_settings.VersionScoringSettings`).

    A local run never re-scores the champion (``rescore=False``): a champion scored under
    another protocol is judged ``incomparable``, naming the differences.
    """

    experiment: str
    champion_alias: str = DEFAULT_CHAMPION_ALIAS
    recipe: Path | None = None
    config_overrides: Sequence[str] = ()
    device: str | None = None
    model_cache_dir: Path | None = None
    models: Sequence[str] = ()
    allowed_uri_prefixes: Sequence[str] = ()

    def judgement_policy(self) -> JudgementPolicy:
        """The default policy (a model's ``sslmem.policy.*`` tags override it)."""
        from sslmem.memorization.judgement import JudgementPolicy

        return JudgementPolicy()

    def lease_settings(self) -> LeaseSettings:
        """The claim's lease settings (``SSLMEM_SERVICE_LEASE_*``, as the service reads them)."""
        return lease_settings_from_env()


@dataclass(frozen=True)
class ChampionJudgement:
    """How a run's version was judged.

    Attributes:
        version: The judged version.
        champion: The champion version it was judged against (itself when it became the
            champion; ``None`` when it could not be judged).
        became_champion: Whether this call pointed the alias at ``version`` (the model had
            no champion).
        judgement: The judgement (``None``: not scored, or the champion is not scored).

    """

    version: str
    champion: str | None
    became_champion: bool
    judgement: Judgement | None


def judge_run_version(
    name: str,
    version: str,
    *,
    settings: LocalJudgeSettings,
    runtime: RuntimeSettings | None = None,
) -> ChampionJudgement:
    """Judge a freshly scored version against the champion; crown it if there is none.

    Args:
        name: Registered model name.
        version: The version the run registered and scored.
        settings: Champion alias and experiment.
        runtime: MLflow and the object store (default: from the environment).

    Returns:
        The champion it was judged against and the judgement.

    Raises:
        TrackingError: MLflow is unreachable, or the scores cannot be read.
        StoreError: The object store is unreachable (the claim lives there).

    """
    from sslmem.tracking import get_version_tags, set_alias

    runtime = process_settings(runtime)
    configure_tracking(runtime)
    number = T.check_version_number(version)
    if get_version_tags(name, number).get(T.STATUS) != "scored":
        return ChampionJudgement(number, None, False, None)
    champion = champion_version(name, settings.champion_alias)
    crowned = champion is None
    if crowned:
        set_alias(name, settings.champion_alias, number)
        logger.info(
            "%s/%s is the first scored version: now %r", name, number, settings.champion_alias
        )
        champion = number
    judgement = judge_registered_version(
        name, number, settings=settings, runtime=runtime, rescore=False
    )
    return ChampionJudgement(number, champion, crowned, judgement)


def source_runs(name: str, versions: Sequence[str]) -> dict[str, str]:
    """``{version: source run id}`` of versions (what MLflow's *Compare* view needs).

    Raises:
        TrackingError: MLflow is unreachable, or a version does not exist.

    """
    from sslmem.tracking.connection import client, tracking_errors

    runs = {}
    with tracking_errors(f"read the source runs of model {name!r}"):
        for version in versions:
            runs[version] = str(client().get_model_version(name, version).run_id or "")
    return runs
