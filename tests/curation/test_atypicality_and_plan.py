"""kNN-distance atypicality and the study plan's arithmetic (issue 18)."""

from __future__ import annotations

import pytest
import torch

from sslmem.config import TrainingConfig
from sslmem.curation.atypicality import knn_distance
from sslmem.curation.plan import StudyPlan, budget_epochs, plan_retrains, study_plan
from sslmem.errors import ConfigError


def test_knn_distance_on_hand_made_directions() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    query = torch.tensor([[5.0, 0.0], [1.0, 1.0]])
    # Query 1 is along bank 1 (distance 0), orthogonal to bank 2 (1), opposite bank 3 (2).
    assert knn_distance(query, bank, k=1).tolist()[0] == pytest.approx(0.0)
    assert knn_distance(query, bank, k=2).tolist()[0] == pytest.approx(0.5)
    assert knn_distance(query, bank, k=3).tolist()[0] == pytest.approx(1.0)
    # Query 2 is 45 degrees from bank 1 and 2: 1 - cos(45°).
    assert knn_distance(query, bank, k=2).tolist()[1] == pytest.approx(1 - 2**-0.5)
    with pytest.raises(ConfigError, match="k=4 neighbours"):
        knn_distance(query, bank, k=4)
    with pytest.raises(ConfigError, match="same layer"):
        knn_distance(query, torch.zeros(3, 5), k=1)


def test_plan_has_a_control_per_seed_and_every_removal() -> None:
    plan = StudyPlan(fractions=(0.1, 0.3), seeds=(0, 1, 2), random_draws=2)
    retrains = plan_retrains(plan, 90)
    # seeds * (1 full + sizes * (top + bottom + 2 random draws))
    assert len(retrains) == 3 * (1 + 2 * 4)
    assert len({r.name for r in retrains}) == len(retrains)
    assert [r.name for r in retrains[:3]] == ["full-s0", "full-s1", "full-s2"]
    assert {r.k for r in retrains} == {0, 9, 27}
    assert "random-k27-d1-s2" in {r.name for r in retrains}


def test_plan_refuses_sizes_that_collide_or_do_not_fit() -> None:
    with pytest.raises(ConfigError, match="repeated removal sizes"):
        plan_retrains(StudyPlan(fractions=(0.1, 0.11)), 20)
    with pytest.raises(ConfigError, match="removes no point"):
        plan_retrains(StudyPlan(fractions=(0.01,)), 20)
    with pytest.raises(ConfigError, match=r"fractions: .*repeat"):
        study_plan(fractions=(0.1, 0.1))
    with pytest.raises(ConfigError, match="strategies"):
        study_plan(strategies=("most",))


def test_budget_holds_steps_or_epochs() -> None:
    training = TrainingConfig(epochs=150, batch_size=50)
    # 150 images: 3 steps/epoch -> 450 steps; 141 images: 2 steps/epoch -> 225 epochs.
    assert budget_epochs(training, 150, 141, "steps") == 225
    assert budget_epochs(training, 150, 141, "epochs") == 150
    assert budget_epochs(training, 150, 150, "steps") == 150
    with pytest.raises(ConfigError, match="fewer than one batch"):
        budget_epochs(training, 150, 49, "steps")
