"""The memory budget (``audit_core.memory``): estimates made from shapes, analyses skipped up
front, models refused, and the peak memory of audits of models too large to analyse."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx_factory import init, make_model, save, weights

from audit_core.attack_budget import MinimalAttackConfig
from audit_core.linearize import _chunk_size
from audit_core.memory import (
    GIB,
    MIB,
    attack_need,
    batch_bytes,
    default_budget_mb,
    format_bytes,
    linearization_need,
    machine_memory,
)
from audit_core.model import open_model
from audit_core.onnx_import import load_onnx
from audit_core.testing import mlp_onnx, random_mlp, save_dataset

AUDIT = [sys.executable, "-c", "from robustness_audit.cli import main; raise SystemExit(main())"]


def test_default_budget_is_the_smaller_of_4_gib_and_a_quarter_of_the_machine() -> None:
    assert default_budget_mb() == min(4096, machine_memory() // 4 // MIB)
    assert batch_bytes(4096) == GIB


@pytest.mark.parametrize(
    ("count", "text"),
    [(4 * GIB, "4 GiB"), (1.5 * GIB, "1.5 GiB"), (48 * 2**40, "48 TiB"), (512 * MIB, "512 MiB")],
)
def test_format_bytes(count: float, text: str) -> None:
    assert format_bytes(count) == text


def test_linearization_need_is_what_linearize_chunks_by(tmp_path: Path) -> None:
    """One sample's estimate is the chunk unit of ``linearize``: a budget of k estimates
    gives chunks of k samples (that chunking keeps the result: tests/test_linearize.py)."""
    weights_, biases = random_mlp([6, 40, 30, 3], seed=1)
    graph = load_onnx(mlp_onnx(tmp_path / "m.onnx", weights_, biases)).graph
    need = linearization_need(graph)
    assert need.bytes == 4 * 8 * 6 * 40
    assert "6 inputs x 40 values" in need.what
    assert _chunk_size(graph, 3 * need.bytes) == 3
    assert _chunk_size(graph, need.bytes - 1) == 1


def test_attack_need_grows_with_restarts_and_halves_in_float32(tmp_path: Path) -> None:
    weights_, biases = random_mlp([20, 64, 10], seed=2)
    x = np.random.default_rng(0).random((4, 20))
    rng = np.random.default_rng(0)
    model = open_model(mlp_onnx(tmp_path / "m.onnx", weights_, biases), "m", x, rng)
    full = attack_need(model, MinimalAttackConfig(preset="full", restarts=2))
    more = attack_need(model, MinimalAttackConfig(preset="full", restarts=8))
    light = attack_need(model, MinimalAttackConfig(preset="light", restarts=2))
    assert more.bytes > full.bytes
    assert light.bytes * 2 == full.bytes
    assert model.forward_cost.activation_values == _intermediate_values(model.loaded.proto)


def _intermediate_values(proto: onnx.ModelProto) -> int:
    """Values per sample of every node output, as onnxruntime computes them."""
    import onnxruntime as ort

    probe = onnx.ModelProto.FromString(proto.SerializeToString())
    known = {o.name for o in probe.graph.output}
    names = [name for node in probe.graph.node for name in node.output]
    probe.graph.output.extend(
        helper.make_empty_tensor_value_info(n) for n in names if n not in known
    )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.zeros((1, 20), dtype=np.float32)
    outputs = session.run(names, {session.get_inputs()[0].name: x})
    return sum(output.size for output in outputs)


def _big_conv(folder: Path) -> tuple[Path, Path]:
    """8 filters of 3x3 on 3x512x512 inputs, ReLU, global average pooling, Gemm to 10
    classes: 2,097,152 ReLUs, so one sample's linearisation needs 48 TiB."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "v", "c0"], ["y"], transB=1),
    ]
    inits = [
        init("w", weights(rng, 8, 3, 3, 3)),
        init("b", weights(rng, 8)),
        init("v", weights(rng, 10, 8)),
        init("c0", weights(rng, 10)),
    ]
    model = save(make_model(nodes, ["n", 3, 512, 512], inits), folder, "bigconv.onnx")
    x = rng.random((2, 3, 512, 512)).astype(np.float32)
    y = np.array([0, 1])  # labels from the file: two classes, whatever the model predicts
    return model, save_dataset(folder / "bigconv.npz", x, y, lower=0.0, upper=1.0)


def _wide_gemm(folder: Path) -> tuple[Path, Path]:
    """784 -> 5000 -> 10: 15 MiB of float32 weights; one sample's linearisation 120 MiB."""
    weights_, biases = random_mlp([784, 5000, 10], seed=3)
    model = mlp_onnx(folder / "wide.onnx", weights_, biases)
    x = np.random.default_rng(1).random((6, 784))
    y = load_onnx(model).graph.predict(x)
    return model, save_dataset(folder / "wide.npz", x, y, lower=0.0, upper=1.0)


def _audit(args: list[str], cwd: Path) -> tuple[int, str, float, float]:
    """``audit ARGS`` serially in a fresh process: exit code, stderr, wall seconds and the
    process's peak resident memory in MiB."""
    env = {**os.environ, "AUDIT_WORKERS": "1"}
    clock = time.perf_counter()
    with (cwd / "stderr.txt").open("w+") as errors:
        child = subprocess.Popen([*AUDIT, *args], cwd=cwd, stdout=subprocess.DEVNULL,
                                 stderr=errors, env=env)  # fmt: skip
        _, status, usage = os.wait4(child.pid, 0)
        errors.seek(0)
        text = errors.read()
    return (
        os.waitstatus_to_exitcode(status),
        text,
        time.perf_counter() - clock,
        usage.ru_maxrss / 1024,
    )


def _analyses(out: Path) -> dict[str, dict]:
    import json

    report = json.loads((out / "report.json").read_text())
    return {run["analysis"]: run for run in report["analyses"]}


def test_large_conv_model_skips_what_would_not_fit_and_stays_small(tmp_path: Path) -> None:
    """The issue's example: such a model's default audit peaked at 8.5 GB (a dense
    linearisation tried and failed). Certificates are skipped up front naming the memory it
    would need; the process stays far below the budget."""
    model, data = _big_conv(tmp_path)
    code, errors, seconds, peak = _audit(
        [str(model), "--data", str(data), "--only", "certificates,lower-bounds",
         "--out", "out", "--quiet"], tmp_path)  # fmt: skip
    runs = _analyses(tmp_path / "out")
    reason = runs["certificates"]["reason"]
    assert runs["certificates"]["outcome"] == "skipped"
    assert "48 TiB" in reason and "linearisation" in reason and "--memory-budget" in reason
    assert runs["lower-bounds"]["outcome"] == "ran", runs["lower-bounds"]["reason"]
    assert code in (0, 1), errors
    # within the default budget (4 GiB) with room to spare: imports take ~0.5 GiB, the
    # fidelity check's float64 convolutions ~1 GiB (1.3-2.1 GiB measured; 8.5 GB before)
    assert peak < 3000, f"peak {peak:.0f} MiB"
    assert seconds < 300


def test_wide_gemm_skips_certificates_under_a_small_budget_and_runs_the_attack(
    tmp_path: Path,
) -> None:
    model, data = _wide_gemm(tmp_path)
    code, errors, _, _ = _audit(
        [str(model), "--data", str(data), "--only", "certificates,attack-bound",
         "--memory-budget", "80M", "--out", "out", "--quiet"], tmp_path)  # fmt: skip
    runs = _analyses(tmp_path / "out")
    assert runs["certificates"]["outcome"] == "skipped"
    assert "120 MiB" in runs["certificates"]["reason"]
    assert "80 MiB" in runs["certificates"]["reason"]
    assert runs["attack-bound"]["outcome"] == "ran"
    assert code in (0, 1), errors
    # with the default budget the same audit certifies
    code, errors, _, _ = _audit(
        [str(model), "--data", str(data), "--only", "certificates", "--out", "all",
         "--quiet", "-o", "certificates.effort=quick"], tmp_path)  # fmt: skip
    assert _analyses(tmp_path / "all")["certificates"]["outcome"] == "ran", errors


def test_model_whose_weights_exceed_the_budget_is_refused_before_reading(tmp_path: Path) -> None:
    model, data = _wide_gemm(tmp_path)
    code, errors, _, _ = _audit(
        [str(model), "--data", str(data), "--memory-budget", "32M", "--out", "out"], tmp_path
    )
    assert code == 4
    lines = errors.strip().splitlines()
    assert len(lines) == 1, errors
    assert "weights (15 MiB)" in lines[0] and "over the memory budget of 32 MiB" in lines[0]
    assert not (tmp_path / "out").exists()


def test_external_data_counts_toward_the_weights(tmp_path: Path) -> None:
    """The check adds the external data files to the ONNX file, before reading them."""
    model, _ = _wide_gemm(tmp_path)
    folder = tmp_path / "external"
    folder.mkdir()
    proto = onnx.load(model)
    onnx.save(proto, folder / "wide.onnx", save_as_external_data=True, location="w.bin")
    assert (folder / "wide.onnx").stat().st_size < MIB
    with pytest.raises(Exception, match=r"weights \(15 MiB\)"):
        load_onnx(folder / "wide.onnx", memory_budget_mb=32)
    assert load_onnx(folder / "wide.onnx", memory_budget_mb=128).graph.input_size == 784
