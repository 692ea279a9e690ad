"""Fuzzing the inputs an audit reads: ONNX files and data files, damaged at the byte level
and (ONNX) at the structure level. Every case must end in the model or data loading, or
in one of the audit's own errors (``AuditError``: a documented exit code and a one-line
message), within a time bound; never in another exception (an internal error with a
traceback) or a hang.

Seeds are fixed. ``AUDIT_FUZZ_CASES`` raises the number of byte-level cases per kind
(default 1,000 models and 300 data files); each test prints how many cases ran and what
they ended in.
"""

from __future__ import annotations

import collections
import io
import os
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import audit_model_zoo as zoo
from audit_core.data import read_data, validate
from audit_core.errors import AuditError
from audit_core.model import open_model
from helpers import corpus

CASES = int(os.environ.get("AUDIT_FUZZ_CASES", "1000"))
DATA_CASES = max(300, CASES * 3 // 10)
CHUNKS = 8
SECONDS_PER_CASE = 20.0
ZOO_SOURCES = ("digits_mlp2", "digits_cnn", "binary_fc3_pgd", "digits_resnet")
CORPUS_SOURCES = (
    "test/test_tiny.onnx",
    "test/test_small.onnx",
    "eran/ffnnSIGMOID__Point_6x200.onnx",
    "verivital/Convnet_avgpool.onnx",
    "acasxu/ACASXU_run2a_1_1_batch_2000.onnx",
)


def _sources() -> list[bytes]:
    paths = [zoo.model_path(name) for name in ZOO_SOURCES]
    paths += [corpus(name) for name in CORPUS_SOURCES]
    return [Path(p).read_bytes() for p in paths]


def mutate(raw: bytes, rng: np.random.Generator) -> bytes:
    """One byte-level damage: bit flips, a truncation, appended garbage, or a span
    replaced by random bytes of another length."""
    data = bytearray(raw)
    kind = int(rng.integers(4))
    if kind == 0:
        for _ in range(int(rng.integers(1, 9))):
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        data = data[: int(rng.integers(1, len(data)))]
    elif kind == 2:
        data += rng.bytes(int(rng.integers(1, 256)))
    else:
        start = int(rng.integers(len(data)))
        data[start : start + int(rng.integers(1, 16))] = rng.bytes(int(rng.integers(0, 16)))
    return bytes(data)


def _outcome(action) -> str:
    """'ok', or the AuditError's class name; anything else fails the test."""
    clock = time.perf_counter()
    try:
        action()
        result = "ok"
    except AuditError as error:
        message = str(error)
        assert message and "\n" not in message.strip(), f"not one line: {message!r}"
        result = type(error).__name__
    seconds = time.perf_counter() - clock
    assert seconds < SECONDS_PER_CASE, f"{seconds:.1f} s"
    return result


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_damaged_onnx_files_load_or_are_refused_cleanly(tmp_path, chunk) -> None:
    sources = _sources()
    rng = np.random.default_rng([20261206, chunk])
    counts: collections.Counter[str] = collections.Counter()
    count = -(-CASES // CHUNKS)
    for case in range(count):
        path = tmp_path / f"case{case}.onnx"
        path.write_bytes(mutate(sources[int(rng.integers(len(sources)))], rng))
        counts[_outcome(lambda p=path: open_model(p, "m", None, np.random.default_rng(0)))] += 1
    print(f"chunk {chunk}: {count} damaged models: {dict(counts)}")
    assert sum(counts.values()) == count and counts["ModelLoadError"] > count // 4


def _data_sources(folder: Path) -> list[Path]:
    x = np.random.default_rng(0).uniform(0, 1, (12, 64)).astype(np.float32)
    y = np.arange(12) % 10
    np.savez(folder / "data.npz", x=x, y=y, lower=0.0, upper=1.0)
    np.save(folder / "data.npy", x)
    lines = ["label," + ",".join(f"p{i}" for i in range(64))]
    lines += [
        f"{label}," + ",".join(f"{v:.4f}" for v in row) for label, row in zip(y, x, strict=True)
    ]
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    return [folder / "data.npz", folder / "data.npy", folder / "data.csv"]


def test_damaged_data_files_load_or_are_refused_cleanly(tmp_path) -> None:
    graph = open_model(zoo.model_path("digits_mlp2"), "m", None, np.random.default_rng(0)).graph
    sources = _data_sources(tmp_path)
    rng = np.random.default_rng(20261207)
    counts: collections.Counter[str] = collections.Counter()
    for case in range(DATA_CASES):
        source = sources[case % len(sources)]
        path = tmp_path / f"case{case}{source.suffix}"
        path.write_bytes(mutate(source.read_bytes(), rng))
        counts[_outcome(lambda p=path: validate(read_data(p), graph))] += 1
    print(f"{DATA_CASES} damaged data files: {dict(counts)}")
    assert sum(counts.values()) == DATA_CASES and counts["DataError"] > 0


# ------------------------------------------------------------------ structure level


def _mlp_graph(nodes=None, initializers=None, inputs=None, outputs=None, opset=17, **kwargs):
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    graph = helper.make_graph(
        nodes if nodes is not None else [helper.make_node("Gemm", ["x", "w", "b"], ["y"])],
        "g",
        inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializers if initializers is not None else [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kwargs)


def _broken_models() -> dict[str, onnx.ModelProto]:
    gemm = helper.make_node("Gemm", ["x", "w", "b"], ["h"])
    relu = lambda i, o: helper.make_node("Relu", [i], [o])  # noqa: E731
    big = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 10**12])]
    zero = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 0])]
    short = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    short.ClearField("raw_data")
    short.float_data.extend([1.0] * 5)  # 5 values for a 4 x 3 tensor
    z_out = [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)]
    branch = helper.make_graph([relu("x", "z")], "then", [], z_out)
    cond = numpy_helper.from_array(np.array(True), "cond")
    return {
        "cycle": _mlp_graph([gemm, relu("h", "k"), helper.make_node("Add", ["k", "y"], ["y"])]),
        "dangling edge": _mlp_graph([helper.make_node("Gemm", ["x", "nowhere", "b"], ["y"])]),
        "duplicate names": _mlp_graph([gemm, relu("h", "y"), relu("h", "y")]),
        "wrong attribute type": _mlp_graph(
            [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB="yes")]
        ),
        "huge declared shape": _mlp_graph(inputs=big),
        "zero-sized dim": _mlp_graph(inputs=zero),
        "absurd opset": _mlp_graph(opset=99999),
        "unknown domain": _mlp_graph(
            [helper.make_node("Gemm", ["x", "w", "b"], ["y"], domain="com.example.nothing")]
        ),
        "nested subgraph": _mlp_graph(
            [gemm, helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)],
            initializers=[
                numpy_helper.from_array(np.ones((4, 3), np.float32), "w"),
                numpy_helper.from_array(np.zeros(3, np.float32), "b"),
                cond,
            ],
        ),
        "initializer size mismatch": _mlp_graph(
            initializers=[short, numpy_helper.from_array(np.zeros(3, np.float32), "b")]
        ),
        "no nodes": _mlp_graph(nodes=[]),
        "output never produced": _mlp_graph(
            outputs=[helper.make_tensor_value_info("missing", TensorProto.FLOAT, ["batch", 3])]
        ),
    }


@pytest.mark.parametrize("case", sorted(_broken_models()))
def test_structurally_broken_models_get_one_error_line(run_audit, tmp_path, case) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(_broken_models()[case].SerializeToString())
    data = io.BytesIO()
    np.savez(data, x=np.random.default_rng(0).uniform(0, 1, (6, 4)), y=np.arange(6) % 3)
    (tmp_path / "data.npz").write_bytes(data.getvalue())
    clock = time.perf_counter()
    run = run_audit(path, "--data", tmp_path / "data.npz", "--only", "attack-bound")
    assert time.perf_counter() - clock < 60
    assert run.exit_code in (0, 1, 4), run.stderr
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr
    assert len([line for line in run.stderr.splitlines() if line.strip()]) <= 1, run.stderr


@pytest.mark.parametrize("case", range(12))
def test_damaged_models_through_the_cli_give_a_documented_exit_and_one_line(
    run_audit, tmp_path, case
) -> None:
    """End to end: the audit of a damaged model exits 0, 1 (it loaded and ran) or 4
    (refused), with at most one line on stderr and no traceback."""
    rng = np.random.default_rng([20261208, case])
    sources = _sources()[:4]  # the zoo models: they name their datasets
    path = tmp_path / "damaged.onnx"
    path.write_bytes(mutate(sources[case % 4], rng))
    data = zoo.dataset_path(ZOO_SOURCES[case % 4])
    run = run_audit(path, "--data", data, "--samples", "3", "--only", "attack-bound")
    assert run.exit_code in (0, 1, 4), run.stderr
    assert "Traceback" not in run.stderr
    assert len([line for line in run.stderr.splitlines() if line.strip()]) <= 1, run.stderr
