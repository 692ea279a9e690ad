"""One attack budget per run: the ``[attacks]`` table, one cached search per model and norm.

Every analysis that needs the minimal-norm search asks the context's attack service
(``ctx.attacks.minimal(norm)``) and gets the one result of the run's budget: the
certificates' gap compares with exactly the attack that attack-bound reports, and
``-o attacks.KEY`` changes it for both.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from audit_core import attacks
from audit_core.attack_budget import MinimalAttackConfig
from audit_core.attack_service import AttackService
from audit_core.console import QuietUI
from audit_core.data import RawData, validate
from audit_core.errors import ConfigError
from audit_core.model import open_model
from audit_core.plugins import PluginHost
from audit_core.runner import RunOutcome, run_audit
from audit_core.settings import Settings
from audit_core.testing import mlp_onnx, random_mlp

FAST = {"restarts": 1, "bisection_steps": 3}
BOTH = ("attack-bound", "certificates")


@pytest.fixture
def searches(monkeypatch) -> list[tuple[int, str, MinimalAttackConfig]]:
    """Every minimal-norm search the run starts: (id of the module, norm, budget)."""
    seen: list[tuple[int, str, MinimalAttackConfig]] = []
    search = attacks.minimal_adversarial

    def counting(model, x, y, *, norm="l2", config=None, **kwargs):
        seen.append((id(model), norm, config))
        return search(model, x, y, norm=norm, config=config, **kwargs)

    monkeypatch.setattr(attacks, "minimal_adversarial", counting)
    return seen


@pytest.fixture(scope="module")
def second_model(tmp_path_factory) -> Path:
    weights, biases = random_mlp([4, 8, 3], seed=7)
    return mlp_onnx(tmp_path_factory.mktemp("second") / "second.onnx", weights, biases)


def _run(models: list[Path], data: Path, norm: str, budget: dict) -> RunOutcome:
    host = PluginHost()
    host.load_entry_points()
    settings = Settings(
        models=tuple(str(m) for m in models),
        data=str(data),
        samples=8,
        norm=norm,
        only=BOTH,
        analysis_options={"attacks": dict(budget)},
    )
    return run_audit(settings, host, QuietUI())


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_one_search_per_norm_and_model_whatever_the_analyses(
    searches, tiny_model, tiny_data, second_model, norm
) -> None:
    outcome = _run([tiny_model, second_model], tiny_data, norm, FAST)
    assert {run.outcome for run in outcome.report.analyses} == {"ran"}
    assert len(outcome.report.analyses) == 4  # two analyses on two models
    counts = Counter((module, used) for module, used, _ in searches)
    assert set(counts.values()) == {1}, counts  # nothing searched twice
    wanted = {"l2", norm}  # the certificates need l2; both judge in --norm
    assert sorted(counts) == sorted((m, n) for m in {m for m, _ in counts} for n in wanted)
    assert len({m for m, _ in counts}) == 2  # one service per model


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_certificates_gap_uses_exactly_the_attack_attack_bound_reports(
    tiny_model, tiny_data, norm
) -> None:
    outcome = _run([tiny_model], tiny_data, norm, FAST)
    bound = outcome.exports[("tiny", "attack-bound")]
    certificates = outcome.exports[("tiny", "certificates")]
    if norm == "l2":
        np.testing.assert_array_equal(certificates["attack_distance"], bound["attack_distance"])
    else:  # the linf column: the l2 points' linf norm, or attack-bound's linf search if closer
        assert np.all(certificates["attack_linf_distance"] <= bound["attack_distance"])
        found = np.isfinite(bound["attack_distance"])
        assert found.any()
    distances = {
        f.analysis: next(s for s in f.evidence.summaries if s.name == "attack_distance")
        for f in outcome.report.findings
        if f.id.startswith(("attack-bound/distances/", "certificates/gap/"))
    }
    if norm == "l2":  # both findings summarise the same distances (correct samples)
        assert distances["attack-bound"].median == distances["certificates"].median


def test_attacks_option_changes_the_search_for_both(searches, tiny_model, tiny_data) -> None:
    budget = {"steps": "3", "restarts": "1", "bisection-steps": "2"}  # as -o gives them
    outcome = _run([tiny_model], tiny_data, "l2", budget)
    (only,) = searches
    # a small model: preset "auto" runs the budget as set ("full")
    assert only[2] == MinimalAttackConfig(steps=3, restarts=1, bisection_steps=2, preset="full")
    assert outcome.report.settings["attacks"]["steps"] == 3
    assert outcome.report.settings["attacks"]["bisection_steps"] == 2
    bound = outcome.exports[("tiny", "attack-bound")]["attack_distance"]
    gap = outcome.exports[("tiny", "certificates")]["attack_distance"]
    np.testing.assert_array_equal(bound, gap)


@pytest.mark.parametrize(
    ("budget", "needle"),
    [
        ({"steps": 0}, "attacks.steps must be at least 1"),
        ({"steps": "many"}, "attacks.steps must be int"),
        ({"search_radius": -1.0}, "attacks.search_radius must be at least 0"),
        ({"bogus": 1}, "unknown option 'bogus' for table 'attacks'"),
    ],
)
def test_a_bad_attacks_table_is_a_usage_error_before_anything_runs(
    searches, tiny_model, tiny_data, budget, needle
) -> None:
    with pytest.raises(ConfigError, match=needle):
        _run([tiny_model], tiny_data, "l2", budget)
    assert searches == []


def test_the_service_caches_per_norm_and_reports_progress_when_cached(
    tiny_model, tiny_data
) -> None:
    data = np.load(tiny_data)
    model = open_model(tiny_model, "tiny", data["x"], np.random.default_rng(0))
    raw = RawData(x=data["x"][:5], y=data["y"][:5])
    audit_data = validate(raw, model.graph, bounds=(0.0, 1.0))
    service = AttackService(model, audit_data, seed=0, config=MinimalAttackConfig(**FAST))
    reports: list[list[int]] = [[], []]
    first = service.minimal("l2", reports[0].append)
    again = service.minimal("l2", reports[1].append)
    assert again is first and service.searches == 1 and service.cached("l2")
    assert reports[0][-1] == service.work_units() == 5 * (3 + 2)  # five samples, five phases
    assert reports[1] == [service.work_units()]  # cached: the total at once
    service.minimal("linf")
    assert service.searches == 2


def test_preset_auto_is_light_above_the_model_size_threshold() -> None:
    """Large models (resnet18: 1.8e9 multiply-adds) get the light budget in float32; the
    light budget caps the keys, never raises them; ``full`` and ``light`` are kept."""
    budget = MinimalAttackConfig(restarts=10, steps=5)
    small, large = budget.effective(10**6), budget.effective(2 * 10**9)
    assert budget.effective(5 * 10**7).preset == "light"  # a conv net on 512x512 images
    assert small == replace(budget, preset="full") and not small.float32
    assert large.preset == "light" and large.float32
    assert (large.restarts, large.steps, large.bisection_steps) == (2, 5, 5)
    assert MinimalAttackConfig(preset="full").effective(10**12).preset == "full"
    assert MinimalAttackConfig(preset="light").effective(1).preset == "light"
