"""The VNN-COMP 2021 mnistfc benchmark through the certificates analysis.

For each of the 90 instances (three MNIST MLPs, 15 images, linf boxes of half-width 0.03
and 0.05 within [0, 1]) the audit's certificates analysis runs on that one image with the
competition's timeout for the network (120 s for 256x2, 300 s for 256x4 and 256x6),
through the Python API with ``effort = thorough`` budgets capped by the timeout. Its
verdict (certified / proven non-robust / undecided) is compared with the public ground
truth (``ground_truth_2021.json``: a majority vote of the 2021 tools):

* a "certified" answer on a "violated" instance or a "non-robust" answer on a "holds"
  instance is WRONG;
* every "non-robust" answer is checked independently: its witness (exported by the
  analysis) must lie inside the instance's box as the vnnlib file states it, and
  onnxruntime (float32) must misclassify it;
* the audit's box must contain the vnnlib box (the eps given to the audit is the largest
  half-width the file states, so a certificate covers the file's box).

It prints each instance as it finishes, then decided / correct / wrong per network beside
alpha-beta-CROWN's 2021 results (30 / 22 / 18 decided on a GPU) and the median time per
decided instance. The full run takes hours; ``--networks 256x2 --images 0-4
--timeout-scale 0.1`` gives a quick look. One torch thread, like the competition's
single-instance runs on this 2-core machine.

    python benchmarks/vnncomp_mnistfc.py [--networks 256x2,256x4] [--images 0-14]
        [--eps 0.03,0.05] [--timeout-scale 1.0] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TIMEOUTS = {"256x2": 120.0, "256x4": 300.0, "256x6": 300.0}
ALPHA_BETA_CROWN_2021 = {"256x2": 30, "256x4": 22, "256x6": 18}
"""Instances alpha-beta-CROWN decided in VNN-COMP 2021 (of 30 per network)."""


@dataclass(frozen=True)
class Instance:
    network: str
    image: int
    eps: float
    label: int
    truth: str
    lower: np.ndarray
    upper: np.ndarray


@dataclass(frozen=True)
class Outcome:
    instance: Instance
    answer: str  # certified | non-robust | undecided
    seconds: float
    wrong: bool
    note: str = ""

    @property
    def decided(self) -> bool:
        return self.answer != "undecided"


def corpus_dir(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    if "AUDIT_CORPUS" in os.environ:
        return Path(os.environ["AUDIT_CORPUS"])
    beside = Path(__file__).resolve().parents[2] / "shared" / "corpus"
    return beside if beside.is_dir() else Path("/work/shared/corpus")


def read_vnnlib(path: Path, size: int) -> tuple[int, np.ndarray, np.ndarray]:
    """The label and the input box ``(lower, upper)`` of an mnistfc property."""
    text = path.read_text()
    label = int(re.search(r"label: (\d+)", text).group(1))
    lower, upper = np.full(size, -np.inf), np.full(size, np.inf)
    for op, index, value in re.findall(r"\(assert \((<=|>=) X_(\d+) ([-0-9.e]+)\)\)", text):
        (upper if op == "<=" else lower)[int(index)] = float(value)
    return label, lower, upper


def instances(root: Path, networks: list[str], images: list[int], eps: list[float]):
    truth = json.loads((root / "mnistfc" / "ground_truth_2021.json").read_text())
    for row in truth:
        network = row["network"].removeprefix("mnist-net_").removesuffix(".onnx")
        image = int(row["property"].split("_")[1])
        if network not in networks or image not in images or row["eps_linf"] not in eps:
            continue
        label, lower, upper = read_vnnlib(root / "mnistfc" / "vnnlib" / row["property"], 784)
        if label != row["label"]:
            raise SystemExit(f"{row['property']}: label {label} != ground truth {row['label']}")
        truth_word = row["truth"].split()[0]
        yield Instance(network, image, row["eps_linf"], label, truth_word, lower, upper)


def run_instance(root: Path, instance: Instance, image: np.ndarray, timeout: float) -> Outcome:
    import robustness_audit as ra

    eps = float(max((image - instance.lower).max(), (instance.upper - image).max()))
    model = root / "mnistfc" / f"mnist-net_{instance.network}.onnx"
    clock = time.perf_counter()
    report = ra.audit(
        model,
        (image[None, :], np.array([instance.label])),
        only=["certificates"],
        norm="linf",
        eps=[eps],
        bounds=(0.0, 1.0),
        options={
            "certificates": {
                "effort": "thorough",
                "exact_search": "off",
                "search_seconds": 0.85 * timeout,
                "search_total_seconds": 0.85 * timeout,
                "propagation_seconds": 0.05 * timeout,
                "propagation_steps": 4,
                "alpha_steps": 0,
            }
        },
    )
    seconds = time.perf_counter() - clock
    arrays = report.arrays_for("certificates")
    verdict = int(arrays["verdict"][0, 0])
    answer = {1: "certified", -1: "non-robust", 0: "undecided"}[verdict]
    if seconds > timeout:
        answer, note = "undecided", f"over the timeout ({seconds:.0f} s)"
    else:
        note = ""
    if answer == "non-robust":
        note = check_witness(model, instance, arrays["witness"][0, 0].reshape(-1))
        if note:
            answer = "undecided"
    wrong = (answer == "certified" and instance.truth == "violated") or (
        answer == "non-robust" and instance.truth == "holds"
    )
    return Outcome(instance, answer, seconds, wrong, note)


def check_witness(model: Path, instance: Instance, point: np.ndarray) -> str:
    """ "" when ``point`` is inside the vnnlib box and onnxruntime misclassifies it."""
    import onnxruntime as ort

    if not np.isfinite(point).all():
        return "no witness exported"
    # the audit's box is the file's up to float32 rounding of its bounds (~1e-9): the
    # witness is moved onto the file's box, and must still fool onnxruntime there
    moved = float(np.abs(np.clip(point, instance.lower, instance.upper) - point).max())
    if moved > 1e-6:
        return f"witness {moved:.2g} outside the vnnlib box"
    point = np.clip(point, instance.lower, instance.upper)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = session.run(None, {name: point.astype(np.float32).reshape(1, 784, 1)})[0]
    if int(np.argmax(logits.reshape(-1))) == instance.label:
        return "onnxruntime classifies the witness correctly"
    return ""


def summary(outcomes: list[Outcome], networks: list[str]) -> str:
    lines = [f"{'network':<8}{'decided':>9}{'correct':>9}{'wrong':>7}{'abcrown2021':>13}"]
    for network in networks:
        mine = [o for o in outcomes if o.instance.network == network]
        decided = [o for o in mine if o.decided]
        wrong = sum(o.wrong for o in mine)
        lines.append(
            f"{network:<8}{len(decided):>6}/{len(mine):<2}{len(decided) - wrong:>9}{wrong:>7}"
            f"{ALPHA_BETA_CROWN_2021[network]:>10}/30"
        )
    decided = [o for o in outcomes if o.decided]
    wrong = sum(o.wrong for o in outcomes)
    lines.append(
        f"{'total':<8}{len(decided):>6}/{len(outcomes):<2}{len(decided) - wrong:>9}{wrong:>7}"
        f"{sum(ALPHA_BETA_CROWN_2021[n] for n in networks):>10}/{30 * len(networks)}"
    )
    if decided:
        median = statistics.median(o.seconds for o in decided)
        lines.append(f"median time per decided instance: {median:.1f} s")
    return "\n".join(lines)


def parse_range(text: str) -> list[int]:
    values: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        values += list(range(int(first), int(last or first) + 1))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default="256x2,256x4,256x6")
    parser.add_argument("--images", default="0-14")
    parser.add_argument("--eps", default="0.03,0.05")
    parser.add_argument("--timeout-scale", type=float, default=1.0)
    parser.add_argument("--corpus")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    root = corpus_dir(args.corpus)
    networks = args.networks.split(",")
    images = parse_range(args.images)
    eps = [float(e) for e in args.eps.split(",")]
    data = np.load(root / "mnistfc" / "mnist_samples.npz")
    pixels = np.clip(data["x"].reshape(len(data["x"]), -1).astype(np.float64), 0.0, 1.0)
    outcomes = []
    for instance in instances(root, networks, images, eps):
        timeout = TIMEOUTS[instance.network] * args.timeout_scale
        outcome = run_instance(root, instance, pixels[instance.image], timeout)
        outcomes.append(outcome)
        flag = "WRONG" if outcome.wrong else ""
        print(
            f"{instance.network} image {instance.image:>2} eps {instance.eps:.2f} "
            f"truth {instance.truth:<9} -> {outcome.answer:<11}{outcome.seconds:7.1f} s "
            f"{flag} {outcome.note}",
            flush=True,
        )
    print()
    print(summary(outcomes, networks))


if __name__ == "__main__":
    main()
