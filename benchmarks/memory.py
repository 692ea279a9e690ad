"""Peak memory of an audit as the number of samples grows 10x (the executor's batches).

Each analysis that streams samples in batches sized from ``--memory-budget`` (the
attack service's minimal-norm search, the certificates' radii and searches, the
lower-bounds pairs) should keep its peak memory flat when the sample count grows:
only the per-sample result arrays grow. The script audits digits_mlp3 on n and 10n
random samples within [0, 1] (labels: the model's predictions), each in a fresh
process (``audit`` CLI, serial), and prints wall time and peak resident memory
(``ru_maxrss`` of the child) per analysis and size, and their ratios.

    python benchmarks/memory.py [--samples 100] [--budget 64M]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ANALYSES = ("attack-bound", "certificates", "lower-bounds")


def _data(folder: Path, count: int, seed: int = 0) -> Path:
    x = np.random.default_rng(seed).uniform(0.0, 1.0, (count, 64)).astype(np.float32)
    path = folder / f"data{count}.npz"
    np.savez(path, x=x, lower=0.0, upper=1.0)
    return path


def audit_process(arguments: list[str]) -> tuple[float, float, int, str]:
    """``audit ARGUMENTS`` in a fresh process: (wall seconds, its own peak resident memory
    in MiB, exit code, stderr)."""
    command = [sys.executable, "-c", "from robustness_audit.cli import main; main()"]
    clock = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen([*command, *arguments], stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak memory
        seconds = time.perf_counter() - clock
        errors.seek(0)
        return seconds, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), errors.read()


def _audit(model: Path, data: Path, count: int, analysis: str, budget: str, out: Path):
    """(wall seconds, peak RSS MiB) of one audit in a fresh process."""
    seconds, peak, code, errors = audit_process([
        str(model), "--data", str(data), "--samples", str(count), "--only", analysis,
        "--workers", "1", "--memory-budget", budget, "--out", str(out), "--quiet",
        "-o", "lower-bounds.max_seconds=20",
    ])  # fmt: skip
    if code not in (0, 1):
        raise SystemExit(f"{analysis} at {count}: exit {code}: {errors.strip()}")
    return seconds, peak


def main() -> None:
    import audit_model_zoo as zoo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--budget", default="64M")
    args = parser.parse_args()
    model = zoo.model_path("digits_mlp3")
    print(f"digits_mlp3, serial, --memory-budget {args.budget}")
    print(f"{'analysis':<14}{'n':>6}{'s':>8}{'peak MiB':>10}{'10n':>7}{'s':>8}{'peak MiB':>10}"
          f"{'time x':>8}{'memory x':>10}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        small, large = args.samples, 10 * args.samples
        data = _data(folder, large)
        for analysis in ANALYSES:
            t1, m1 = _audit(model, data, small, analysis, args.budget, folder / "a")
            t10, m10 = _audit(model, data, large, analysis, args.budget, folder / "b")
            print(f"{analysis:<14}{small:>6}{t1:>8.1f}{m1:>10.0f}{large:>7}{t10:>8.1f}"
                  f"{m10:>10.0f}{t10 / t1:>8.1f}{m10 / m1:>10.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
