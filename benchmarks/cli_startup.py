"""Wall-clock time of the ``audit`` command, beside ``python -c pass`` in the same run.

    python benchmarks/cli_startup.py                      # 5 runs of each short command, 3 audits
    python benchmarks/cli_startup.py --runs 3 --audit-runs 1
    git archive 5624490 | tar -x -C /tmp/before           # an older checkout, as a peer:
    python benchmarks/cli_startup.py --baseline /tmp/before

Each command runs as a fresh process of this interpreter and the median wall time of its
runs is printed with the median CPU time (user + system, which a busy machine inflates
less) and the ratio of the wall time to ``python -c pass`` measured in the same run. The
short commands must feel instant (target 0.5 s): ``--version``, ``--help``, ``plugins``
with no plugin loaded (``AUDIT_PLUGINS=``; the plugins' own imports are theirs),
``plugins`` with every installed plugin, and a usage error. The last row is the README's
audit command (target 5 s on 2 cores), reports written to a temporary directory.

``--baseline DIR`` times the CLI of another source tree (same layout: ``audit_core/``,
``plugins/``, ``reports/``, ``model_zoo/``) beside this one, run by run in turn, with the
packages installed in this interpreter. Exit status 0 either way: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MODEL = "model_zoo/models/digits_mlp2.onnx"
IMPORT_NAMES = {
    "audit_core": "audit_core",
    "audit_plugins": "plugins",
    "audit_reports": "reports",
    "audit_model_zoo": "model_zoo",
    "robustness_audit": "robustness_audit",
}
"""Import name -> folder of a source tree (``package-dir`` in pyproject.toml)."""


@dataclass(frozen=True)
class Case:
    """One command to time: the ``audit`` arguments (None: ``python -c pass``)."""

    label: str
    args: tuple[str, ...] | None
    env: tuple[tuple[str, str], ...] = ()
    expected_code: int = 0
    audit: bool = False


@dataclass(frozen=True)
class Tree:
    """A source tree whose CLI is timed: its folder and how to start its ``audit``."""

    name: str
    root: Path
    pythonpath: str | None = None

    def command(self, case: Case) -> list[str]:
        if case.args is None:
            return [sys.executable, "-c", "pass"]
        module = (
            "robustness_audit.cli"
            if (self.root / "robustness_audit" / "cli.py").is_file()
            else "audit_core.cli"
        )
        start = f"import sys; from {module} import main; sys.exit(main())"
        return [sys.executable, "-c", start, *case.args]


def cases(out_dir: str) -> list[Case]:
    """The commands, in the order they are printed."""
    return [
        Case("python -c pass", None),
        Case("audit --version", ("--version",)),
        Case("audit --help", ("--help",)),
        Case("audit plugins (AUDIT_PLUGINS=)", ("plugins",), (("AUDIT_PLUGINS", ""),)),
        Case("audit plugins (all installed)", ("plugins",)),
        Case("audit M.onnx --no-such-option", (README_MODEL, "--nope"), expected_code=4),
        Case(f"audit {README_MODEL}", (README_MODEL, "--out", out_dir), audit=True),
    ]


def baseline_tree(folder: Path, links: Path) -> Tree:
    """``folder`` importable under the installed import names, through symlinks in ``links``."""
    for name, sub in IMPORT_NAMES.items():
        if (folder / sub).is_dir():
            (links / name).symlink_to(folder / sub)
    return Tree(f"baseline {folder}", folder, str(links))


def timed_run(tree: Tree, case: Case) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``case`` (an unexpected exit code is an error)."""
    env = {**os.environ, **dict(case.env)}
    if tree.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (tree.pythonpath, env.get("PYTHONPATH"))))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(tree.command(case), cwd=tree.root, env=env, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != case.expected_code:
        detail = done.stderr.decode(errors="replace")[-2000:]
        raise SystemExit(f"{tree.name}: {case.label} exited {done.returncode}:\n{detail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(trees: list[Tree], case: Case, runs: int) -> list[tuple[float, float]]:
    """Median (wall, CPU) per tree; the trees take turns run by run, after one warm-up each."""
    for tree in trees:
        timed_run(tree, case)
    samples: list[list[tuple[float, float]]] = [[] for _ in trees]
    for _ in range(runs):
        for tree, collected in zip(trees, samples, strict=True):
            collected.append(timed_run(tree, case))
    return [
        (statistics.median(w for w, _ in got), statistics.median(c for _, c in got))
        for got in samples
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each short command")
    parser.add_argument("--audit-runs", type=int, default=3, help="runs of the README audit")
    parser.add_argument("--baseline", type=Path, help="another source tree to time beside")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        trees = [Tree("this checkout", ROOT)]
        if args.baseline:
            links = Path(scratch) / "baseline-links"
            links.mkdir()
            trees.append(baseline_tree(args.baseline.resolve(), links))
        _report(trees, cases(str(Path(scratch) / "report")), args)
    return 0


def _report(trees: list[Tree], all_cases: list[Case], args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.2f} at start; {sys.executable}")
    print("median of fresh processes: wall s / CPU s (user+sys) / wall as a multiple of python")
    print(f"  {'command':<46}" + "".join(f"  {t.name[:30]:>30}" for t in trees))
    python: list[float] = []
    for case in all_cases:
        medians = measure(trees, case, args.audit_runs if case.audit else args.runs)
        python = python or [wall for wall, _ in medians]
        cells = [
            f"{wall:6.2f} / {cpu:5.2f} / {wall / base:5.0f}x"
            for (wall, cpu), base in zip(medians, python, strict=True)
        ]
        print(f"  {case.label:<46}" + "".join(f"  {cell:>30}" for cell in cells), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    raise SystemExit(main())
