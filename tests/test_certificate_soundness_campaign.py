"""The soundness campaign (``benchmarks/certificate_soundness.py``) at its CI size.

Every certified number the tool produces (simplex, decision-boundary and
bound-propagation radii in l2 and linf, the complete search's verdicts, the KKT
universal flip, the lower bounds on robust loss, the transfer analyses' exact flip
scales and Theorem 5 bounds) is checked against independent evidence: the project's
own attacks, torchattacks (a second implementation: PGD-L2, PGD-Linf, DeepFool,
CW-L2) when it is importable, exact distances on tiny nets, float64 forward passes
and onnxruntime. Any violation fails.

torchattacks is not in the ``test`` extra: torchattacks 3.5.1 pins ``requests~=2.25.1``,
whose ``urllib3<1.27`` conflicts with selenium's ``urllib3>=2.6.3`` (pip would downgrade
selenium and urllib3). The README's test command (and so CI) installs it beside the
project with ``pip install --no-deps torchattacks==3.5.1`` (it imports without
``requests``); without it the campaign runs every other attacker and says so.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from certificate_campaign import torchattacks_available

ROOT = Path(__file__).resolve().parents[1]


def test_quick_campaign_finds_no_violation() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "certificate_soundness.py"), "--quick",
         "--jobs", "2"],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out[-6000:] + run.stderr[-3000:]
    assert "violations: 0 (must be 0)" in out
    assert "VIOLATION" not in out
    for claim in (
        "simplex radius (l2)",
        "bound-propagation radius (l2)",
        "bound-propagation radius (linf)",
        "kkt: point flipped at c",
        "lower bound on robust 0-1 loss",
        "convex-transfer: exact flip scale",
        "linear-transfer: Theorem 5 bound",
    ):
        assert claim in out, f"{claim} was not checked"
    rows = [line for line in out.splitlines() if "torchattacks" in line]
    if torchattacks_available():
        for attacker in ("PGD-L2", "PGD-Linf", "DeepFool", "CW-L2"):
            assert any(f"torchattacks {attacker}" in line for line in rows), attacker
    else:
        assert "torchattacks is not installed" in out
