"""Build the model zoo: train every model, write ONNX files, datasets and ``zoo.json``.

Usage::

    python -m audit_model_zoo.build [--only NAME ...] [--out DIR]
    python model_zoo/build.py [--only NAME ...]          # needs `pip install -e .`

Deterministic: the same machine gives byte-identical ``models/*.onnx``, ``data/*.npz``
and ``zoo.json`` on every run (see ``training.deterministic_torch``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

try:
    from audit_model_zoo import ZOO_DIR
    from audit_model_zoo.architectures import DigitsCNN, DigitsResNet, NonnegTwoLayer, mlp
    from audit_model_zoo.datasets import (
        DIGITS_IMAGE_SHAPE,
        DIGITS_SPLIT_SEED,
        DIGITS_TEST_FRACTION,
        Split,
        audit_arrays,
        binary_subset,
        digits_split,
        load_npz,
        save_npz,
    )
    from audit_model_zoo.evaluate import mlp_from_onnx, onnx_accuracy
    from audit_model_zoo.onnx_export import (
        GraphBuilder,
        ModelInfo,
        cnn_graph,
        depth2_graph,
        make_model,
        mlp_graph,
        mlp_layers,
        resnet_graph,
        save_model,
    )
    from audit_model_zoo.training import (
        TrainConfig,
        fit,
        pgd_l2,
        robust_accuracy,
        sphere_data,
        train_depth2_exponential,
    )
except ModuleNotFoundError as exc:  # `python model_zoo/build.py` without an install
    if exc.name != "audit_model_zoo":
        raise
    raise SystemExit("audit_model_zoo is not installed: run `pip install -e .` first") from exc

SPHERE = {"d": 100, "m": 20, "width": 100, "data_seed": 0, "init_seed": 0}
BINARY_EPS_TRAIN = 1.0  # l2, inputs in [0, 1]^64
PGD_TRAIN_STEPS = 10
PGD_EVAL_STEPS = 100
NONNEG_PAIR = (4, 9)
NONNEG_THRESHOLD = 1.0
FAMILY_PARTS = 3  # transfer families: disjoint parts of the digits training split
FAMILY_SEED = 0
SVM_C = 1.0  # sklearn's LinearSVC default, as in Charles et al. 2019, Sec. 7
# Charles et al. 2019, App. A.9, corrected (the printed net misclassifies x1 and x2):
# f(x) = relu(-x_1 - 1/2) + relu(x_1 - 1/2); label +1 (class 1) iff f(x) > 0.
A9_X = np.array([[-1.0, 1.0], [1.0, 1.0], [0.0, -1.0]])
A9_Y = np.array([1, 1, 0])
A9_W = np.array([[-1.0, 0.0], [1.0, 0.0]])
A9_B = np.array([-0.5, -0.5])
A9_V = np.array([1.0, 1.0])


@dataclass(frozen=True)
class Trained:
    """A trained model as an ONNX graph plus its description for the manifest."""

    graph: GraphBuilder
    architecture: str
    training: dict[str, Any]


@dataclass(frozen=True)
class Spec:
    """How to build one zoo model."""

    name: str
    dataset: str  # stem of the file in data/
    data_split: str
    input_shape: tuple[int, ...]
    num_outputs: int
    opset: int
    doc: str
    train: Callable[[], Trained]
    robust_eps: float | None = None


# --- data ------------------------------------------------------------------------------


@cache
def _digits() -> Split:
    return digits_split()


@cache
def _pair(negative: int, positive: int) -> Split:
    return binary_subset(_digits(), negative, positive)


def _images(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 1, *DIGITS_IMAGE_SHAPE)


@cache
def _sphere() -> tuple[np.ndarray, np.ndarray]:
    """Sphere data rounded to float32 first, so the stored dataset is the training set."""
    x, y = sphere_data(SPHERE["d"], SPHERE["m"], SPHERE["data_seed"])
    return x.astype(np.float32).astype(np.float64), y


def _digits_arrays(split: Split, x: np.ndarray) -> dict[str, np.ndarray]:
    return audit_arrays(x, split.y_test, split.class_names, (0.0, 1.0), DIGITS_IMAGE_SHAPE)


def _sphere_arrays() -> dict[str, np.ndarray]:
    x, y = _sphere()
    r = float(np.sqrt(SPHERE["d"]))
    return audit_arrays(x, (y > 0).astype(np.int64), ("-1", "+1"), (-r, r))


@cache
def _family_parts() -> tuple[np.ndarray, ...]:
    """Disjoint parts (sorted training indices) of a seed-``FAMILY_SEED`` permutation."""
    perm = np.random.default_rng(FAMILY_SEED).permutation(len(_digits().y_train))
    return tuple(np.sort(part) for part in np.array_split(perm, FAMILY_PARTS))


def _a9_arrays() -> dict[str, np.ndarray]:
    return audit_arrays(A9_X, A9_Y, ("-1", "+1"), (-2.0, 2.0))


DATASETS: dict[str, Callable[[], dict[str, np.ndarray]]] = {
    "digits_test": lambda: _digits_arrays(_digits(), _digits().x_test),
    "digits_test_images": lambda: _digits_arrays(_digits(), _images(_digits().x_test)),
    "digits_3v7_test": lambda: _digits_arrays(_pair(3, 7), _pair(3, 7).x_test),
    "digits_4v9_test": lambda: _digits_arrays(_pair(*NONNEG_PAIR), _pair(*NONNEG_PAIR).x_test),
    "sphere_train": _sphere_arrays,
    "a9_three_points": _a9_arrays,
}


# --- recipes ---------------------------------------------------------------------------


def _adam(config: TrainConfig, data: str, **extra: Any) -> dict[str, Any]:
    return {"optimizer": "Adam", "data": data, **asdict(config), **extra}


def _fit_digits(
    factory: Callable[[], Any], config: TrainConfig, images: bool = False
) -> tuple[Any, dict[str, Any]]:
    split = _digits()
    x = _images(split.x_train) if images else split.x_train
    model, losses = fit(factory, x, split.y_train, config)
    info = _adam(
        config, f"digits train split ({len(x)})", loss="cross-entropy", final_train_loss=losses[-1]
    )
    return model, info


def _train_linear() -> Trained:
    model, info = _fit_digits(lambda: mlp([64, 10]), TrainConfig(epochs=100, lr=1e-2))
    return Trained(mlp_graph(mlp_layers(model)), "Gemm 64->10", info)


def _train_mlp2() -> Trained:
    config = TrainConfig(epochs=80, lr=3e-3, weight_decay=1e-4)
    model, info = _fit_digits(lambda: mlp([64, 32, 10]), config)
    return Trained(mlp_graph(mlp_layers(model)), "Gemm 64->32, Relu, Gemm 32->10", info)


def _train_mlp3() -> Trained:
    model, info = _fit_digits(lambda: mlp([64, 48, 32, 10]), TrainConfig(epochs=40, lr=1e-2))
    graph = mlp_graph(mlp_layers(model), matmul_layers=frozenset({0, 2}))
    arch = "MatMul+Add 64->48, Relu, Gemm 48->32, Relu, MatMul+Add 32->10"
    return Trained(graph, arch, info)


def _train_cnn() -> Trained:
    model, info = _fit_digits(DigitsCNN, TrainConfig(epochs=40, lr=1e-2), images=True)
    arch = "Conv 1->8 3x3 pad 1, Relu, MaxPool 2x2/2, Flatten, Gemm 128->10"
    return Trained(cnn_graph(model), arch, info)


def _train_resnet() -> Trained:
    model, info = _fit_digits(DigitsResNet, TrainConfig(epochs=60, lr=3e-3), images=True)
    arch = (
        "Conv 1->8 3x3, BN, Relu, [Conv 8->8, BN, Relu, Conv 8->8, BN] + skip (Add), "
        "Relu, AveragePool 2x2/2, Flatten, Gemm 128->10"
    )
    info["batch_norm"] = "trained in train mode (momentum 0.1), exported with running stats"
    return Trained(resnet_graph(model), arch, info)


def _train_binary(adversarial: bool) -> Trained:
    split = _pair(3, 7)
    config = TrainConfig(epochs=100, batch_size=32, lr=1e-3)
    attack = None
    extra: dict[str, Any] = {"loss": "cross-entropy"}
    if adversarial:

        def attack(m: Any, x: Any, y: Any) -> Any:
            return pgd_l2(m, x, y, BINARY_EPS_TRAIN, PGD_TRAIN_STEPS)

        extra |= {
            "adversarial_training": "l2 PGD (Madry et al. 2018), all batches",
            "eps_train": BINARY_EPS_TRAIN,
            "pgd_steps": PGD_TRAIN_STEPS,
            "pgd_step_size": 2.5 * BINARY_EPS_TRAIN / PGD_TRAIN_STEPS,
        }
    model, losses = fit(lambda: mlp([64, 64, 32, 2]), split.x_train, split.y_train, config, attack)
    info = _adam(
        config,
        f"digits 3 vs 7 train split ({len(split.y_train)})",
        **extra,
        final_train_loss=losses[-1],
    )
    arch = "Gemm 64->64, Relu, Gemm 64->32, Relu, Gemm 32->2"
    return Trained(mlp_graph(mlp_layers(model)), arch, info)


def _train_sphere() -> Trained:
    x, y = _sphere()
    result = train_depth2_exponential(x, y, SPHERE["width"], seed=SPHERE["init_seed"])
    margins = y * (np.maximum(x @ result.W.T + result.b, 0.0) @ result.v)
    last = result.history[-1]
    info = {
        "recipe": "Vardi et al. 2022 Sec. 6: full-batch GD on the exponential loss (sum), "
        "float64, lr 1e-5 x1.1 every 100 iterations, stop at loss < 1e-30",
        **SPHERE,
        "init": "W ~ N(0, 1/d), b = 0, v ~ N(0, 1/width)",
        "iterations": last["iteration"],
        "final_loss": last["loss"],
        "final_lr": last["lr"],
        "min_margin": float(margins.min()),
        "on_margin_1.1": int((margins <= 1.1 * margins.min()).sum()),
        "num_positive": int((y > 0).sum()),
    }
    graph = depth2_graph(result.W, result.b, result.v, output_bias=None)
    return Trained(graph, "Gemm 100->100, Relu, Gemm 100->1 without bias", info)


def _train_nonneg() -> Trained:
    split = _pair(*NONNEG_PAIR)
    config = TrainConfig(epochs=100, batch_size=32, lr=3e-3)
    model, losses = fit(
        lambda: NonnegTwoLayer(64, 32, NONNEG_THRESHOLD), split.x_train, split.y_train, config
    )
    info = _adam(
        config,
        f"digits {NONNEG_PAIR[0]} vs {NONNEG_PAIR[1]} train split ({len(split.y_train)})",
        loss="logistic on f(x) - a",
        parametrisation="v = softplus(u) >= 0",
        threshold_a=NONNEG_THRESHOLD,
        final_train_loss=losses[-1],
    )
    W, b = (t.detach().numpy() for t in (model.hidden.weight, model.hidden.bias))
    v = model.output_weights().detach().numpy()
    graph = depth2_graph(W, b, v, output_bias=-NONNEG_THRESHOLD)
    return Trained(graph, "Gemm 64->32, Relu, Gemm 32->1 (v >= 0, bias -a, a = 1)", info)


def _family_data(part: int) -> tuple[np.ndarray, np.ndarray, str]:
    split, index = _digits(), _family_parts()[part]
    described = (
        f"digits train split, part {part} of {FAMILY_PARTS} ({len(index)} samples; "
        f"disjoint parts of a seed-{FAMILY_SEED} permutation)"
    )
    return split.x_train[index], split.y_train[index], described


def _train_svm_part(part: int) -> Trained:
    from sklearn.svm import LinearSVC

    x, y, described = _family_data(part)
    svm = LinearSVC(C=SVM_C, random_state=0, max_iter=20000).fit(x, y)
    info = {
        "trainer": "sklearn LinearSVC (liblinear, one-vs-rest, squared hinge, dual)",
        "C": SVM_C,
        "data": described,
        "seed": 0,
        "iterations": int(np.max(svm.n_iter_)),
        "train_accuracy": float(svm.score(x, y)),
    }
    graph = mlp_graph([(svm.coef_, svm.intercept_)])
    return Trained(graph, "Gemm 64->10 (one-vs-rest linear SVM)", info)


def _train_mlp_part(part: int) -> Trained:
    x, y, described = _family_data(part)
    config = TrainConfig(epochs=100, batch_size=32, lr=3e-3, weight_decay=1e-4)
    model, losses = fit(lambda: mlp([64, 32, 10]), x, y, config)
    info = _adam(config, described, loss="cross-entropy", final_train_loss=losses[-1])
    return Trained(mlp_graph(mlp_layers(model)), "Gemm 64->32, Relu, Gemm 32->10", info)


def _build_a9() -> Trained:
    info = {
        "recipe": "fixed weights, no training: Charles et al. 2019, App. A.9, corrected",
        "network": "f(x) = relu(-x_1 - 1/2) + relu(x_1 - 1/2); logit = f(x), no output bias",
        "decision": "class 1 (label +1) iff f(x) > 0; the boundary f = 0 is class 0 (label -1)",
        "convex_region": "class 0 = {f <= 0} = the strip |x_1| <= 1/2 (Lemma 13)",
        "max_margin_direction": [0.0, 1.0],
    }
    graph = depth2_graph(A9_W, A9_B, A9_V, output_bias=None)
    return Trained(graph, "Gemm 2->2, Relu, Gemm 2->1 without bias (v = 1)", info)


def _family_specs() -> tuple[Spec, ...]:
    svms = tuple(
        Spec(
            f"digits_svm_part{k}",
            "digits_test",
            "digits test split",
            (64,),
            10,
            17,
            f"Linear SVM (LinearSVC, one-vs-rest) on part {k} of {FAMILY_PARTS} of the "
            "digits training split; transfer family (Charles et al. 2019, Sec. 7).",
            lambda k=k: _train_svm_part(k),
        )
        for k in range(FAMILY_PARTS)
    )
    mlps = tuple(
        Spec(
            f"digits_mlp2_part{k}",
            "digits_test",
            "digits test split",
            (64,),
            10,
            17,
            f"2-layer ReLU MLP 64-32-10 on part {k} of {FAMILY_PARTS} of the digits "
            "training split; transfer family (Charles et al. 2019, Sec. 7).",
            lambda k=k: _train_mlp_part(k),
        )
        for k in range(FAMILY_PARTS)
    )
    a9 = Spec(
        "transfer_a9",
        "a9_three_points",
        "the three points of App. A.9",
        (2,),
        1,
        17,
        "Charles et al. 2019, App. A.9 (corrected): logit f(x) = relu(-x_1 - 1/2) + "
        "relu(x_1 - 1/2), class 1 (label +1) iff f > 0; the max-margin direction (0, 1) "
        "does not transfer to it.",
        _build_a9,
    )
    return (*svms, *mlps, a9)


_TEST = "digits test split"
SPECS: tuple[Spec, ...] = (
    Spec(
        "digits_linear",
        "digits_test",
        _TEST,
        (64,),
        10,
        17,
        "Linear classifier (one Gemm) on 8x8 digits in [0,1]^64.",
        _train_linear,
    ),
    Spec(
        "digits_mlp2",
        "digits_test",
        _TEST,
        (64,),
        10,
        13,
        "2-layer ReLU MLP 64-32-10 on 8x8 digits (opset 13).",
        _train_mlp2,
    ),
    Spec(
        "digits_mlp3",
        "digits_test",
        _TEST,
        (64,),
        10,
        17,
        "3-layer ReLU MLP 64-48-32-10 on 8x8 digits; MatMul+Add and Gemm layers.",
        _train_mlp3,
    ),
    Spec(
        "digits_cnn",
        "digits_test_images",
        _TEST,
        (1, 8, 8),
        10,
        13,
        "Small CNN (Conv-Relu-MaxPool-Gemm) on 1x8x8 digits (opset 13).",
        _train_cnn,
    ),
    Spec(
        "digits_resnet",
        "digits_test_images",
        _TEST,
        (1, 8, 8),
        10,
        17,
        "Small residual CNN with BatchNormalization and a skip Add on 1x8x8 digits.",
        _train_resnet,
    ),
    Spec(
        "binary_fc3_benign",
        "digits_3v7_test",
        "digits 3 vs 7 test split",
        (64,),
        2,
        17,
        "3-layer FCNN 64-64-32-2, digit 3 (0) vs 7 (1), standard training.",
        lambda: _train_binary(False),
        robust_eps=BINARY_EPS_TRAIN,
    ),
    Spec(
        "binary_fc3_pgd",
        "digits_3v7_test",
        "digits 3 vs 7 test split",
        (64,),
        2,
        17,
        "3-layer FCNN 64-64-32-2, digit 3 (0) vs 7 (1), l2 PGD adversarial training.",
        lambda: _train_binary(True),
        robust_eps=BINARY_EPS_TRAIN,
    ),
    Spec(
        "sphere_depth2",
        "sphere_train",
        "training set (the KKT analysis uses it)",
        (100,),
        1,
        17,
        "Depth-2 ReLU net, one logit, no output bias, trained to loss < 1e-30 on 20 "
        "random points of the sphere of radius 10 in R^100 (Vardi et al. 2022, Sec. 6).",
        _train_sphere,
    ),
    Spec(
        "nonneg_2layer",
        "digits_4v9_test",
        "digits 4 vs 9 test split",
        (64,),
        1,
        17,
        "2-layer ReLU net in class R' (Charles et al. 2019, Lemma 14): logit = "
        "v^T relu(Wx+b) - a with v >= 0, a = 1; digit 4 (0) vs 9 (1).",
        _train_nonneg,
    ),
    *_family_specs(),
)


# --- build -----------------------------------------------------------------------------


def spec(name: str) -> Spec:
    """The build recipe of one model."""
    for s in SPECS:
        if s.name == name:
            return s
    raise KeyError(f"unknown zoo model {name!r}")


def build_models(
    only: Sequence[str] | None = None, root: Path = ZOO_DIR, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Build the selected models (all by default) under ``root``; returns their entries.

    Writes ``root/data/<dataset>.npz`` for the datasets they use, ``root/models/<name>.onnx``
    and ``root/zoo.json`` (entries of models not rebuilt are kept).
    """
    specs = [spec(n) for n in only] if only else list(SPECS)
    for stem in sorted({s.dataset for s in specs}):
        save_npz(root / "data" / f"{stem}.npz", DATASETS[stem]())
    entries = [_build_one(s, root, log) for s in specs]
    _write_manifest(root / "zoo.json", entries)
    return entries


def _build_one(s: Spec, root: Path, log: Callable[[str], None]) -> dict[str, Any]:
    start = time.perf_counter()
    trained = s.train()
    info = ModelInfo(
        s.name, s.doc, f"../data/{s.dataset}.npz", s.input_shape, s.num_outputs, s.opset
    )
    path = root / "models" / f"{s.name}.onnx"
    save_model(make_model(trained.graph, info), path)
    data_path = root / "data" / f"{s.dataset}.npz"
    e = {
        "name": s.name,
        "file": f"models/{s.name}.onnx",
        "dataset": f"data/{s.dataset}.npz",
        "data_split": s.data_split,
        "input_shape": ["batch", *s.input_shape],
        "num_outputs": s.num_outputs,
        "num_classes": max(2, s.num_outputs),
        "architecture": trained.architecture,
        "training": trained.training,
        "accuracy": onnx_accuracy(path, data_path),
        **_robust_entry(s, path, data_path),
        "opset": s.opset,
        "doc": s.doc,
    }
    log(
        f"{s.name}: accuracy {e['accuracy']:.4f}, robust {e['robust_accuracy']}, "
        f"{time.perf_counter() - start:.1f} s"
    )
    return e


def _robust_entry(s: Spec, path: Path, data_path: Path) -> dict[str, Any]:
    if s.robust_eps is None:
        return {"robust_accuracy": None, "robust_eval": None}
    data = load_npz(data_path)
    bounds = (float(data["lower"]), float(data["upper"]))
    value = robust_accuracy(
        mlp_from_onnx(path), data["x"], data["y"], s.robust_eps, PGD_EVAL_STEPS, bounds
    )
    how = {
        "attack": "pgd_l2",
        "eps": s.robust_eps,
        "steps": PGD_EVAL_STEPS,
        "step_size": 2.5 * s.robust_eps / PGD_EVAL_STEPS,
        "start": "zero",
        "bounds": list(bounds),
        "counts_as_broken": "any iterate misclassified",
        "implementation": "audit_model_zoo.training.robust_accuracy",
    }
    return {"robust_accuracy": value, "robust_eval": how}


def _write_manifest(path: Path, entries: list[dict[str, Any]]) -> None:
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    merged = {e["name"]: e for e in old} | {e["name"]: e for e in entries}
    order = [s.name for s in SPECS if s.name in merged]
    text = json.dumps([merged[n] for n in order], indent=2) + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m audit_model_zoo.build", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=[s.name for s in SPECS],
        help="build only these models (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ZOO_DIR,
        help="zoo root to write models/, data/ and zoo.json into",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    build_models(args.only, args.out)
    print(
        f"built in {time.perf_counter() - start:.1f} s "
        f"(digits split: seed {DIGITS_SPLIT_SEED}, test fraction {DIGITS_TEST_FRACTION})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
