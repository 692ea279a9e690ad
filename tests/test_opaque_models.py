"""Models with ops the layer graph lacks, end to end: a torch model with HardSwish and ELU
exported with ``torch.onnx.export`` loads through onnx2torch (one ``Opaque`` node); the
audit runs the analyses that only need forward and backward passes (attack-bound, and the
empirical parts of linear-transfer and convex-transfer) and skips those that need the
layer graph (certificates, lower-bounds, kkt) up front, naming the missing ops."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from audit_core.testing import save_dataset

GRAPH_ANALYSES = ("certificates", "lower-bounds", "kkt")
FORWARD_ANALYSES = ("attack-bound", "linear-transfer", "convex-transfer")
MISSING = ("HardSwish (opset 17)", "Elu (opset 17)")


class _HardSwishNet(torch.nn.Module):
    """4 -> 16 (HardSwish) -> 16 (ELU) -> 16 (HardSigmoid, which the layer graph has) -> 3."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Linear(4, 16), torch.nn.Linear(16, 16)
        self.c, self.d = torch.nn.Linear(16, 16), torch.nn.Linear(16, 3)
        with torch.no_grad():
            for layer in (self.a, self.b, self.c, self.d):
                layer.weight.mul_(3.0)
            self.d.bias.sub_(self(x).mean(0))  # every class predicted on x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.hardswish(self.a(x))
        h = torch.nn.functional.elu(self.b(h))
        return self.d(torch.nn.functional.hardsigmoid(self.c(h)))


def _export(net: torch.nn.Module, path: Path, batch_axis: bool) -> Path:
    example = torch.zeros(1, 4) if batch_axis else torch.zeros(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            net.eval(),
            (example,),
            str(path),
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}} if batch_axis else None,
            opset_version=17,
            dynamo=False,
        )
    return path


@pytest.mark.parametrize("batch_axis", [True, False], ids=["batch-axis", "no-batch-axis"])
def test_audit_of_a_model_with_ops_the_layer_graph_lacks(run_audit, tmp_path, batch_axis):
    x = np.random.default_rng(0).random((40, 4)).astype(np.float32)
    net = _HardSwishNet(torch.from_numpy(x))
    model = _export(net, tmp_path / "hardswish.onnx", batch_axis)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).argmax(1).numpy()
    assert set(y.tolist()) == {0, 1, 2}
    data = save_dataset(tmp_path / "data.npz", x, y, lower=0.0, upper=1.0)

    run = run_audit(model, "--data", data, "--samples", "16", "--quiet")

    assert run.exit_code in (0, 1), run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    report = run.report
    (info,) = report["models"]
    assert info["torch_source"] == "onnx2torch"
    assert info["layers"][-1] == f"Opaque[onnx2torch; layer graph lacks {', '.join(MISSING)}]"
    findings = run.findings
    assert not [f["id"] for f in findings if f["status"] == "error"]
    for name in FORWARD_ANALYSES:
        ran = [f for f in findings if f["analysis"] == name]
        assert ran and all(f["status"] in ("pass", "warn", "fail") for f in ran), ran
    for name in GRAPH_ANALYSES:
        (skipped,) = [f for f in findings if f["analysis"] == name]
        assert skipped["status"] == "skipped", skipped
        assert "needs the layer graph" in skipped["summary"]
        for op in MISSING:
            assert op in skipped["summary"], skipped["summary"]
