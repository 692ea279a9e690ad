"""Certified radius by bound propagation: ours (``audit_core.bounds``) against auto_LiRPA.

What it measures, on the corpus MNIST MLPs (mnist-net_256x2/4/6) and the 15 corpus
images (clipped to [0, 1]), for l2 and linf, per image, one torch thread for both tools:

* **CROWN**: the certified radius by bisection on ``[0, HIGH[norm]]`` with the same
  number of halvings for both tools. Ours is ``audit_core.bounds.radius.certified_radius``
  with ``alpha_steps=0`` (``Verifier.margins`` at each midpoint, over the ball or box
  intersected with [0, 1], inflated by the float32 input rounding as in the audit);
  auto_LiRPA's is ``compute_bounds(method="CROWN")`` on the margin specs.
* **optimised slopes**: a second bisection with the same halvings for both tools, on
  one interval shared by both: from the smaller of the two CROWN radii to
  ``ALPHA_REACH`` times the larger one. Ours is full alpha-CROWN
  (``Verifier.optimized_bounds``: intermediate slopes optimised too; ``--ours-alpha
  final`` uses ``optimized_margins``, last layer only, with CROWN's intermediate
  bounds); auto_LiRPA's is ``method="CROWN-Optimized"`` with its defaults (also full:
  intermediate bounds recomputed every iteration; Adam, lr 0.5, decay 0.98). Both
  run 20 iterations.

"Certified at eps" is the same question on both sides: every margin lower bound > 0.
Ours runs with ``Verifier(bp, 0.0)`` (no logit slack; the audit uses 1e-4).
Differences that remain, printed with the results:

* auto_LiRPA's l2 ball ignores ``x_L``/``x_U``: its l2 set is the whole ball, ours the
  ball within [0, 1] (MNIST's black background halves many directions), so ours is
  tighter by construction on l2; on linf both use the box clipped to [0, 1].
* both tools run in float64 (networks rebuilt in torch from the ONNX Gemm weights);
  auto_LiRPA 0.3 keeps its alphas in float32 (hard-coded), its bounds in float64.

Soundness: at every radius a tool certifies, a 20-step PGD (margin loss, in torch,
float64, inside the ball or box and [0, 1]) must not find an adversarial example;
violations are printed (expected 0).

auto_LiRPA 0.3 needs shims on torch 2.14 / numpy 2, applied here before importing it
(``install_auto_lirpa_shims``); without the last one its alpha-CROWN silently equals
CROWN (every alpha starts at 0 or 1, where torch's clamp has zero gradient).

Install the peer (benchmark only, into the venv that runs this script)::

    pip install --no-deps -r benchmarks/requirements-peers.txt

Run (times on 2 shared cores at load average 4-7)::

    python benchmarks/bound_propagation.py            # 3 nets x 15 images: 256x2 ~18 min,
                                                      # 256x4 ~37 min, 256x6 ~105 min
    python benchmarks/bound_propagation.py --networks mnist-net_256x6 --images 6  # ~42 min
    python benchmarks/bound_propagation.py --quick    # 256x2, 5 images, 2-5 min

Targets (issue 13): our CROWN radius >= auto_LiRPA's on every image at <= 2x its time;
our optimised-slope median radius > its alpha-CROWN median at <= its time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from audit_core.bounds.input_set import InputSet
from audit_core.bounds.propagation import BoundPropagation
from audit_core.bounds.radius import RadiusBudget, certified_radius
from audit_core.bounds.verify import Verifier, inflated
from audit_core.onnx_import import load_onnx

CORPUS = Path(
    os.environ.get("AUDIT_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")
)
NETWORKS = ("mnist-net_256x2", "mnist-net_256x4", "mnist-net_256x6")
NORMS = ("l2", "linf")
HIGH = {"l2": 3.0, "linf": 0.25}
"""Upper end of the CROWN bisection (above every radius either tool reaches here)."""
ALPHA_REACH = 1.5
ITERATIONS = 20
PGD_STEPS = 20
NOTES: list[str] = []
Tensor = torch.Tensor


# ---------------------------------------------------------------- auto_LiRPA
def install_auto_lirpa_shims() -> None:
    """Make auto_LiRPA 0.3 importable and correct on numpy 2 / torch 2.14."""
    legacy = types.ModuleType("numpy.lib.arraysetops")
    legacy.isin = np.isin  # type: ignore[attr-defined]
    sys.modules["numpy.lib.arraysetops"] = legacy
    np.lib.arraysetops = legacy  # type: ignore[attr-defined]

    import torch.onnx.symbolic_helper as helper
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

    def set_opset(version: int) -> None:
        GLOBALS.export_onnx_opset_version = version

    helper._set_opset_version = set_opset  # type: ignore[attr-defined]
    # attribute access by name, as torch < 2.x had it (auto_LiRPA's graph parser)
    torch._C.Node.__getitem__ = lambda node, key: getattr(node, node.kindOf(key))(key)

    from auto_LiRPA.operators.activation import BoundRelu

    BoundRelu._relu_mask_alpha = staticmethod(_relu_mask_alpha)


def _straight_through_clamp(alpha: Tensor) -> Tensor:
    """``clamp(alpha, 0, 1)`` with gradient 1 everywhere (torch's is 0 at 0 and 1)."""
    return alpha + (alpha.clamp(0.0, 1.0) - alpha).detach()


def _relu_mask_alpha(
    lower: Tensor, upper: Tensor, lb_lower_d: Tensor | None, ub_lower_d: Tensor | None
) -> tuple[Tensor | None, Tensor | None, Tensor]:
    """auto_LiRPA 0.3's ``BoundRelu._relu_mask_alpha`` with the straight-through clamp."""
    lower_mask = (lower >= 0).to(lower.dtype)
    upper_mask = upper <= 0
    unstable = (1.0 - lower_mask) * (1.0 - upper_mask.to(upper.dtype))

    def slope(alpha: Tensor | None) -> Tensor | None:
        if alpha is None:
            return None
        return _straight_through_clamp(alpha) * unstable + lower_mask

    return slope(lb_lower_d), slope(ub_lower_d), upper_mask.all()


@contextlib.contextmanager
def float64_default() -> Iterator[None]:
    """auto_LiRPA casts its best bounds to the default dtype: keep them float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class Theirs:
    """auto_LiRPA CROWN and alpha-CROWN margin checks (one BoundedModule per method).

    alpha-CROWN runs with auto_LiRPA's defaults (sparse alphas, sized by the unstable
    neurons of its first CROWN pass); where those crash (0.3 on 256x6, when a later
    iteration has other unstable neurons) the network switches to dense alphas for
    good (same bounds, more memory) and ``fallbacks`` counts it."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net
        self.fallbacks = 0
        self.crown = self._module({})
        self.alpha = self._module({"optimize_bound_args": {"iteration": ITERATIONS}})

    def _module(self, options: dict) -> torch.nn.Module:
        from auto_LiRPA import BoundedModule

        dummy = torch.zeros((1, 784), dtype=torch.float64)
        with float64_default():
            return BoundedModule(self.net, dummy, bound_opts=options, device="cpu")

    def certified(self, x: Tensor, label: int, eps: float, norm: str, optimised: bool) -> bool:
        if not optimised:
            return self._certified(self.crown, "CROWN", x, label, eps, norm)
        try:
            return self._certified(self.alpha, "CROWN-Optimized", x, label, eps, norm)
        except (AssertionError, RuntimeError):
            self.fallbacks += 1
            dense = {"sparse_spec_alpha": False, "sparse_features_alpha": False}
            self.alpha = self._module({"optimize_bound_args": {"iteration": ITERATIONS}, **dense})
            return self._certified(self.alpha, "CROWN-Optimized", x, label, eps, norm)

    @staticmethod
    def _certified(
        module: torch.nn.Module, method: str, x: Tensor, label: int, eps: float, norm: str
    ) -> bool:
        from auto_LiRPA import BoundedTensor, PerturbationLpNorm

        low, high = (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)
        order = 2 if norm == "l2" else np.inf
        ball = BoundedTensor(x, PerturbationLpNorm(norm=order, eps=eps, x_L=low, x_U=high))
        with float64_default():
            lower, _ = module.compute_bounds(
                x=(ball,), C=margin_matrix(label), method=method, bound_upper=False
            )
        return bool((lower > 0).all())


def margin_matrix(label: int) -> Tensor:
    """``(1, 9, 10)``: ``e_label - e_j`` for every other class j."""
    eye = torch.eye(10, dtype=torch.float64)
    others = [j for j in range(10) if j != label]
    return (eye[label] - eye[others])[None]


# ---------------------------------------------------------------- ours
class Ours:
    """Our CROWN radius (the audit's ``certified_radius``) and optimised-slope check."""

    def __init__(self, path: Path) -> None:
        graph = load_onnx(path).graph
        self.verifier = Verifier(BoundPropagation(graph), 0.0)

    def crown_radius(
        self, x: Tensor, label: int, norm: str, steps: int, bounded: bool = True
    ) -> float:
        """``certified_radius`` over the set within [0, 1] (``bounded``) or the whole one."""
        lower, upper = (0.0, 1.0) if bounded else (-np.inf, np.inf)
        budget = RadiusBudget(steps=steps, alpha_steps=0, batch=1)
        start, stop = torch.zeros(1, dtype=torch.float64), torch.full((1,), HIGH[norm])
        labels = torch.tensor([label])
        radius = certified_radius(self.verifier, x, labels, norm, lower, upper, start, stop, budget)
        return float(radius[0])

    def certified(self, x: Tensor, label: int, eps: float, norm: str, variant: str) -> bool:
        """Optimised slopes at ``eps`` (the set inflated as ``certified_radius`` does):
        ``full`` alpha-CROWN or alpha on the ``final`` layer only."""
        size = x.norm() if norm == "l2" else x.abs().max()
        radius = inflated(torch.tensor([eps], dtype=torch.float64), size.reshape(1))
        inputs = InputSet.around(x, radius, norm, 0.0, 1.0)
        labels = torch.tensor([label])
        if variant == "full":
            return bool(self.verifier.optimized_bounds(inputs, labels, ITERATIONS)[1].certified)
        with torch.no_grad():
            bounds = self.verifier.bp.intermediate(inputs)
        margins = self.verifier.optimized_margins(inputs, labels, bounds, ITERATIONS)
        return bool(margins.certified)


# ---------------------------------------------------------------- shared pieces
def torch_mlp(path: Path) -> torch.nn.Sequential:
    """The Gemm/Relu ONNX MLP as a float64 torch module on flat (B, 784) inputs."""
    model = onnx.load(str(path))
    weights = {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}
    layers: list[torch.nn.Module] = []
    for node in model.graph.node:
        if node.op_type == "Gemm":
            weight, bias = weights[node.input[1]], weights[node.input[2]]
            linear = torch.nn.Linear(weight.shape[1], weight.shape[0]).double()
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(weight))
                linear.bias.copy_(torch.from_numpy(bias))
            layers.append(linear)
        elif node.op_type == "Relu":
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).eval()


def bisect(decide: Callable[[float], bool], low: float, high: float, steps: int) -> float:
    """The largest proven eps: ``low`` is taken as proven, midpoints are decided."""
    for _ in range(steps):
        if not high - low > 1e-6 * max(high, 1e-12):
            break
        middle = (low + high) / 2
        if decide(middle):
            low = middle
        else:
            high = middle
    return low


def pgd_finds_adversarial(
    net: torch.nn.Module, x: Tensor, label: int, eps: float, norm: str
) -> bool:
    """20-step PGD on the margin loss inside the ball or box around ``x`` and [0, 1]."""
    if eps <= 0:
        return False
    step = 2.5 * eps / PGD_STEPS
    point = x.clone()
    for _ in range(PGD_STEPS + 1):
        point.requires_grad_(True)
        logits = net(point)[0]
        others = torch.cat([logits[:label], logits[label + 1 :]])
        if int(logits.argmax()) != label:
            return True
        (gradient,) = torch.autograd.grad(others.max() - logits[label], point)
        with torch.no_grad():
            point = _project(point + step * _direction(gradient, norm), x, eps, norm)
    return False


def _direction(gradient: Tensor, norm: str) -> Tensor:
    if norm == "linf":
        return gradient.sign()
    return gradient / gradient.norm().clamp_min(1e-30)


def _project(point: Tensor, center: Tensor, eps: float, norm: str) -> Tensor:
    """Into the ball or box, then into [0, 1] (clipping only moves coordinates toward
    the centre, which is in [0, 1], so the point stays in the ball)."""
    delta = point - center
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * torch.clamp(eps / delta.norm().clamp_min(1e-30), max=1.0)
    return (center + delta).clamp(0.0, 1.0)


# ---------------------------------------------------------------- the run
@dataclass
class Row:
    """Per image radii and seconds of one method on both sides."""

    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    ours_seconds: list[float] = field(default_factory=list)
    theirs_seconds: list[float] = field(default_factory=list)


@dataclass
class Setting:
    """Halvings of the CROWN and alpha bisections; the methods compared."""

    steps: int
    alpha_steps: int
    methods: tuple[str, ...]
    whole_ball: bool = False


def timed(function: Callable[[], float]) -> tuple[float, float]:
    clock = time.perf_counter()
    value = function()
    return value, time.perf_counter() - clock


def one_image(
    ours: Ours, theirs: Theirs, x: Tensor, label: int, norm: str, setting: Setting
) -> dict[str, tuple[float, float, float, float]]:
    """Per method: (radius ours, radius theirs, seconds ours, seconds theirs)."""
    steps, alpha_steps, high = setting.steps, setting.alpha_steps, HIGH[norm]
    crown_ours, t_ours = timed(lambda: ours.crown_radius(x, label, norm, steps))
    crown_theirs, t_theirs = timed(
        lambda: bisect(lambda eps: theirs.certified(x, label, eps, norm, False), 0.0, high, steps)
    )
    result = {"CROWN": (crown_ours, crown_theirs, t_ours, t_theirs)}
    if setting.whole_ball and norm == "l2":
        ball, t_ball = timed(lambda: ours.crown_radius(x, label, norm, steps, bounded=False))
        result["CROWN-b"] = (ball, crown_theirs, t_ball, t_theirs)
    low = min(crown_ours, crown_theirs)
    top = min(high, ALPHA_REACH * max(crown_ours, crown_theirs) + high / 2**steps)
    alpha_theirs, t_theirs = timed(
        lambda: bisect(
            lambda eps: theirs.certified(x, label, eps, norm, True), low, top, alpha_steps
        )
    )
    for method, variant in (("alpha", "full"), ("alpha-1", "final")):
        if method in setting.methods:
            alpha_ours, t_ours = timed(
                lambda v=variant: bisect(
                    lambda eps: ours.certified(x, label, eps, norm, v), low, top, alpha_steps
                )
            )
            result[method] = (alpha_ours, alpha_theirs, t_ours, t_theirs)
    return result


def run_network(
    name: str, images: Tensor, labels: np.ndarray, setting: Setting
) -> tuple[dict[tuple[str, str], Row], list[str]]:
    """Both methods, both norms on one network; PGD violations as messages."""
    path = CORPUS / "mnistfc" / f"{name}.onnx"
    net = torch_mlp(path)
    ours, theirs = Ours(path), Theirs(net)
    methods = setting.methods + (("CROWN-b",) if setting.whole_ball else ())
    rows = {(norm, method): Row() for norm in NORMS for method in methods}
    violations: list[str] = []
    correct = net(images).argmax(dim=1).numpy() == labels
    _warm_up(ours, theirs, images[:1], int(labels[0]))
    for norm in NORMS:
        for index in np.flatnonzero(correct):
            x, label = images[index : index + 1], int(labels[index])
            result = one_image(ours, theirs, x, label, norm, setting)
            for method, (mine, peer, t_mine, t_peer) in result.items():
                row = rows[(norm, method)]
                row.ours.append(mine)
                row.theirs.append(peer)
                row.ours_seconds.append(t_mine)
                row.theirs_seconds.append(t_peer)
            violations += _attack(net, x, label, norm, result, f"{name} {norm} image {index}")
            progress = " ".join(
                f"{m} {r[0]:.4f}/{r[1]:.4f} {r[2]:.1f}/{r[3]:.1f}s" for m, r in result.items()
            )
            print(
                f"  {name} {norm} {index:>2}: {progress} (ours/theirs)", file=sys.stderr, flush=True
            )
    if theirs.fallbacks:
        NOTES.append(f"{name}: auto_LiRPA's sparse alphas crashed; dense alphas used instead")
    return rows, violations


def _warm_up(ours: Ours, theirs: Theirs, x: Tensor, label: int) -> None:
    """One call of each (lazy init, JIT) outside the timings."""
    for norm in NORMS:
        ours.crown_radius(x, label, norm, 1)
        ours.certified(x, label, 0.01, norm, "full")
        ours.certified(x, label, 0.01, norm, "final")
        theirs.certified(x, label, 0.01, norm, False)
        theirs.certified(x, label, 0.01, norm, True)


def _attack(
    net: torch.nn.Module, x: Tensor, label: int, norm: str, result: dict, where: str
) -> list[str]:
    """PGD at every radius certified by either tool for any method."""
    certified = {f"ours {m}": r[0] for m, r in result.items()}
    certified.update(
        {f"auto_LiRPA {m}": r[1] for m, r in result.items() if m in ("CROWN", "alpha")}
    )
    return [
        f"{where}: PGD adversarial inside {tool}'s certified radius {radius:.6g}"
        for tool, radius in certified.items()
        if pgd_finds_adversarial(net, x, label, radius, norm)
    ]


# ---------------------------------------------------------------- printing
HEADER = (
    f"{'network':<17}{'norm':<6}{'method':<7}{'median ours':>12}{'theirs':>9}"
    f"{'ratio min':>10}{'median':>8}{'ours>=':>8}{'s/img ours':>11}{'theirs':>9}"
    f"{'t ratio':>8}"
)


def ratios(ours: list[float], theirs: list[float]) -> list[float]:
    """Per image ours/theirs (1 when both are 0, inf when only theirs is)."""
    return [
        o / t if t > 0 else (1.0 if o == 0 else float("inf"))
        for o, t in zip(ours, theirs, strict=True)
    ]


def format_row(name: str, norm: str, method: str, row: Row) -> str:
    per_image = ratios(row.ours, row.theirs)
    wins = sum(o >= t for o, t in zip(row.ours, row.theirs, strict=True))
    ours_time = statistics.mean(row.ours_seconds)
    theirs_time = statistics.mean(row.theirs_seconds)
    return (
        f"{name:<17}{norm:<6}{method:<7}{statistics.median(row.ours):>12.4f}"
        f"{statistics.median(row.theirs):>9.4f}{min(per_image):>10.3f}"
        f"{statistics.median(per_image):>8.3f}{wins:>5}/{len(row.ours):<2}"
        f"{ours_time:>11.3f}{theirs_time:>9.3f}{ours_time / theirs_time:>8.2f}"
    )


def print_preamble(setting: Setting, count: int) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread; float64 both")
    print("  (auto_LiRPA 0.3 keeps its alphas in float32, its bounds in float64)")
    print(
        f"{count} images; CROWN: {setting.steps} halvings of [0, {HIGH['l2']}] (l2) and "
        f"[0, {HIGH['linf']}] (linf)"
    )
    print(
        f"alpha: {setting.alpha_steps} halvings of [min CROWN radius, {ALPHA_REACH} x max "
        f"CROWN radius], {ITERATIONS} iterations each side"
    )
    print("ours: Verifier(bp, 0.0), no logit slack; alpha = full alpha-CROWN")
    print("  (Verifier.optimized_bounds: intermediate slopes optimised too);")
    print("  alpha-1 = alpha on the last layer only (Verifier.optimized_margins)")
    print("auto_LiRPA: alpha = CROWN-Optimized with its defaults (intermediate bounds")
    print("  re-optimised every iteration), in both alpha rows")
    print("l2: auto_LiRPA's ball ignores x_L/x_U; ours is the ball within [0, 1]")
    if setting.whole_ball:
        print("  CROWN-b: ours over the whole l2 ball too (auto_LiRPA's set)")
    print("certified: every margin lower bound > 0; times: seconds per image (bisection)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="our bound propagation vs auto_LiRPA")
    parser.add_argument("--quick", action="store_true", help="256x2, 5 images, fewer steps")
    parser.add_argument("--images", type=int, default=None, help="first N corpus images")
    parser.add_argument("--networks", nargs="*", default=None, choices=NETWORKS)
    parser.add_argument(
        "--whole-ball",
        action="store_true",
        help="also ours CROWN over the whole l2 ball (auto_LiRPA's set), row CROWN-b",
    )
    parser.add_argument(
        "--no-alpha-1", action="store_true", help="skip ours alpha on the last layer only"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    install_auto_lirpa_shims()
    methods = ("CROWN", "alpha") if args.no_alpha_1 else ("CROWN", "alpha", "alpha-1")
    steps = (8, 5) if args.quick else (12, 7)
    setting = Setting(*steps, methods, args.whole_ball)
    networks = args.networks or (NETWORKS[:1] if args.quick else NETWORKS)
    count = args.images or (5 if args.quick else 15)
    data = np.load(CORPUS / "mnistfc" / "mnist_samples.npz")
    images = torch.from_numpy(np.clip(data["x"][:count], 0.0, 1.0).astype(np.float64))
    labels = data["y"][:count].astype(int)
    print_preamble(setting, count)
    clock = time.perf_counter()
    lines, violations = [], []
    for name in networks:
        rows, found = run_network(name, images, labels, setting)
        violations += found
        lines += [format_row(name, n, m, row) for (n, m), row in rows.items() if row.ours]
    print(HEADER)
    print("\n".join(lines))
    print("\n".join(NOTES))
    print(f"PGD ({PGD_STEPS} steps) inside certified radii: {len(violations)} violations")
    for message in violations:
        print(f"  {message}")
    print(f"total {time.perf_counter() - clock:.0f} s")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
