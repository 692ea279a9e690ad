"""End-to-end audits: wall time and peak memory, whole and per analysis.

Targets: the README's audit (``audit model_zoo/models/digits_mlp2.onnx``) and an audit of
each corpus MNIST MLP (mnist-net_256x2/4/6) on the corpus's 15 images within [0, 1],
each with every applicable analysis at the defaults (all local cores). Each audit runs
in a fresh process: first whole, then once per analysis alone (``--only``), so that the
peak resident memory (``ru_maxrss`` of that process) is the analysis's own plus the
process's baseline (imports, model, data), printed on the first row. With local
workers (the default) their processes' memory comes on top: ``--workers 1`` measures
the whole audit in one process.

    python benchmarks/end_to_end.py [--targets readme,256x2] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from memory import audit_process

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("AUDIT_CORPUS", ROOT.parent / "shared" / "corpus"))


def targets() -> dict[str, list[str]]:
    images = str(CORPUS / "mnistfc" / "mnist_samples.npz")
    out = {"readme": [str(ROOT / "model_zoo" / "models" / "digits_mlp2.onnx")]}
    for size in ("256x2", "256x4", "256x6"):
        model = str(CORPUS / "mnistfc" / f"mnist-net_{size}.onnx")
        out[size] = [model, "--data", images, "--bounds", "0,1"]
    return out


def _analyses(report: Path) -> list[tuple[str, str]]:
    runs = json.loads(report.read_text())["analyses"]
    return [(a["analysis"], a["outcome"]) for a in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="readme,256x2,256x4,256x6")
    parser.add_argument("--workers", default="")
    args = parser.parse_args()
    workers = ["--workers", args.workers] if args.workers else []
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'target':<8}{'analysis':<18}{'outcome':<9}{'wall s':>8}{'peak MiB':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.targets.split(","):
            base = [*targets()[name], *workers, "--quiet"]
            out = Path(tmp) / name
            seconds, peak, code, errors = audit_process([*base, "--out", str(out)])
            if code not in (0, 1):
                print(f"{name:<8}failed (exit {code}): {errors.strip()}")
                continue
            print(f"{name:<8}{'(whole audit)':<18}{'':<9}{seconds:>8.1f}{peak:>10.0f}", flush=True)
            for analysis, outcome in _analyses(out / "report.json"):
                if outcome != "ran":
                    print(f"{'':<8}{analysis:<18}{outcome:<9}")
                    continue
                alone = [*base, "--only", analysis, "--out", str(out / analysis)]
                seconds, peak, code, _ = audit_process(alone)
                print(f"{'':<8}{analysis:<18}{'ran':<9}{seconds:>8.1f}{peak:>10.0f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
