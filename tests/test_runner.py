"""Planning and running: requirements, skip reasons, several models, exit codes."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

import audit_model_zoo as zoo
from audit_core.analysis import Analysis, Requirements
from audit_core.console import QuietUI
from audit_core.errors import ExitCode
from audit_core.findings import RUN_WIDE, Method, Severity, Status
from audit_core.plugins import PluginHost
from audit_core.runner import run_audit
from audit_core.settings import Settings
from helpers import corpus


class Probe(Analysis):
    """Records the context it got and returns one passing finding."""

    name = "probe"
    title = "Probe"
    seen: ClassVar[list] = []

    def run(self, ctx):
        Probe.seen.append((ctx.model.name, len(ctx.models), ctx.eps, ctx.rng.random()))
        yield ctx.finding(
            "ok",
            title="ok",
            status=Status.PASS,
            severity=Severity.INFO,
            method=Method.EMPIRICAL,
            summary="fine",
        )


def _host(*analyses: Analysis) -> PluginHost:
    host = PluginHost()
    from types import SimpleNamespace

    from audit_core.hookspecs import hookimpl

    @hookimpl
    def audit_register_analyses(register):
        for analysis in analyses:
            register(analysis)

    host.register(SimpleNamespace(audit_register_analyses=audit_register_analyses), "test")
    return host


def _run(host: PluginHost, *models, **settings):
    """The audit, with the probes in this process (``isolate="none"``): they record what
    they saw in class attributes, which a child process's changes would not reach."""
    settings.setdefault("isolate", "none")
    return run_audit(Settings(models=tuple(str(m) for m in models), **settings), host, QuietUI())


@pytest.mark.parametrize(
    ("requirements", "model", "reason"),
    [
        (Requirements(binary=True), "digits_mlp2", "needs a binary classifier"),
        (Requirements(dense_depth=2), "digits_mlp3", "depth-2"),
        (Requirements(dense_depth=2), "digits_cnn", "not such a chain"),
        (Requirements(min_models=2), "digits_mlp2", "at least 2 models"),
    ],
)
def test_unmet_requirements_are_skipped_with_the_reason(requirements, model, reason) -> None:
    class Needy(Probe):
        name = "needy"
        requires = requirements

    outcome = _run(_host(Needy()), zoo.model_path(model), samples=5)
    (run,) = outcome.report.analyses
    assert run.outcome == "skipped" and reason in run.reason
    assert outcome.report.findings[0].status is Status.SKIPPED
    assert outcome.exit_code is ExitCode.NOTHING_ANALYSED


def test_piecewise_linear_requirement_on_the_sigmoid_corpus_model() -> None:
    class NeedsPL(Probe):
        name = "needs-pl"
        requires = Requirements(piecewise_linear=True)

    outcome = _run(
        _host(NeedsPL()),
        corpus("eran/ffnnSIGMOID__Point_6x200.onnx"),
        data=str(corpus("mnistfc/mnist_samples.npz")),
        samples=3,
    )
    assert "Sigmoid" in outcome.report.analyses[0].reason


def test_several_models_get_unique_names_and_seeded_contexts() -> None:
    Probe.seen = []
    path = zoo.model_path("digits_mlp2")
    outcome = _run(_host(Probe()), path, path, samples=5, eps=(0.25,), seed=7)
    assert [m.name for m in outcome.report.models] == ["digits_mlp2", "digits_mlp2-2"]
    assert [s[:3] for s in Probe.seen] == [
        ("digits_mlp2", 2, (0.25,)),
        ("digits_mlp2-2", 2, (0.25,)),
    ]
    first = [s[3] for s in Probe.seen]
    Probe.seen = []
    _run(_host(Probe()), path, path, samples=5, eps=(0.25,), seed=7)
    assert [s[3] for s in Probe.seen] == first  # same seed, same random streams
    assert first[0] != first[1]  # but a different stream per model
    assert outcome.exit_code is ExitCode.OK


def test_multi_model_analysis_runs_once() -> None:
    class Together(Probe):
        name = "together"
        multi_model = True

    Probe.seen = []
    path = zoo.model_path("digits_linear")
    outcome = _run(_host(Together()), path, path, samples=4)
    assert len(Probe.seen) == 1 and outcome.report.analyses[0].model == RUN_WIDE


def test_run_wide_findings_runs_and_exports_share_one_key() -> None:
    """A multi-model analysis's run, findings, skip and exports are all keyed ``RUN_WIDE``,
    never by the first model's name."""

    class Together(Probe):
        name = "together"
        multi_model = True

        def run(self, ctx):
            ctx.export("together", value=np.arange(3))
            yield from super().run(ctx)

    class Apart(Together):
        name = "apart"
        requires = Requirements(min_models=3)

    path = zoo.model_path("digits_linear")
    outcome = _run(_host(Together(), Apart()), path, path, samples=4)
    (finding, skipped) = outcome.report.findings
    assert (finding.id, finding.model) == ("together/ok", RUN_WIDE)
    assert (skipped.id, skipped.model, skipped.status) == (
        "apart/skipped",
        RUN_WIDE,
        Status.SKIPPED,
    )
    assert [run.model for run in outcome.report.analyses] == [RUN_WIDE, RUN_WIDE]
    assert list(outcome.exports) == [(RUN_WIDE, "together")]
    single = _run(_host(Probe()), path, path, samples=4)  # per-model findings keep the names
    assert [f.id for f in single.report.findings] == [
        "probe/ok/digits_linear",
        "probe/ok/digits_linear-2",
    ]


def test_default_eps_follows_the_data_scale() -> None:
    Probe.seen = []
    _run(_host(Probe()), zoo.model_path("digits_mlp2"), samples=3)
    _run(_host(Probe()), zoo.model_path("digits_mlp2"), samples=3, norm="linf")
    (l2,), (linf,) = Probe.seen[0][2], Probe.seen[1][2]
    assert l2 == pytest.approx(0.05 * np.sqrt(64))
    assert linf == pytest.approx(0.03)


def test_accuracy_is_recorded_per_model() -> None:
    outcome = _run(_host(Probe()), zoo.model_path("digits_cnn"), samples=50)
    assert 0.9 <= outcome.report.models[0].accuracy <= 1.0
    assert outcome.report.data.count == 50
