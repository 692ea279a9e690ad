"""Found by the soundness campaign (``benchmarks/certificate_soundness.py``): a kkt witness
that the deployed model does not misclassify.

The kkt analysis reports the exact smallest ``c`` along ``u = z / ||z||`` that flips every
point of the margin set, and ``flipped_at_c``: the points with ``y_i N(x_i - y_i c_inside u)
< 0`` at ``c_inside = c (1 + 1e-6)``, checked by the float64 layer graph only. On the tiny
random net below (the campaign's ``tiny-2d-12-1``), point 245 lies so close to the decision
boundary that ``c`` is 0.00187 and its witness has the float64 logit +5.3e-9 (flipped) but
the onnxruntime float32 logit -1.5e-8 (not flipped): the claimed flip was below the
runtime's rounding. Fixed: a point counts as flipped at ``c`` only where onnxruntime
misclassifies it too.
"""

from __future__ import annotations

import zlib

import numpy as np

from audit_core.console import QuietUI
from audit_core.model import open_model
from audit_core.plugins import PluginHost
from audit_core.runner import run_audit
from audit_core.settings import Settings
from audit_core.testing import mlp_onnx, random_mlp, save_dataset


def test_every_kkt_witness_flipped_at_c_is_misclassified_by_onnxruntime(tmp_path) -> None:
    weights, biases = random_mlp([2, 12, 1], seed=15, scale=2.0)
    path = mlp_onnx(tmp_path / "tiny.onnx", weights, biases)
    model = open_model(path, "tiny", None, np.random.default_rng(0))
    x = np.random.default_rng(zlib.crc32(b"tiny-2d-12-1")).uniform(-1.0, 1.0, (600, 2))
    x = x.astype(np.float32).astype(np.float64)
    labels = model.graph.predict(x)
    data = save_dataset(tmp_path / "data.npz", x, labels, lower=-2.0, upper=2.0)
    settings = Settings(models=(str(path),), data=str(data), only=("kkt",), samples=600,
                        eps=(0.1,), workers=1)  # fmt: skip
    host = PluginHost()
    host.load_entry_points()
    arrays = next(a for (_, key), a in run_audit(settings, host, QuietUI()).exports.items()
                  if key == "kkt")  # fmt: skip
    u = arrays["z"] / np.linalg.norm(arrays["z"])
    y = 2.0 * labels - 1.0
    witnesses = x - y[:, None] * float(arrays["c_inside"]) * u
    flipped = arrays["flipped_at_c"].astype(bool)
    deployed = model.runtime.logits(witnesses)[:, 0] > 0
    assert np.isfinite(float(arrays["c_inside"]))  # the exact (float64) universal flip exists
    assert (deployed[flipped] != labels[flipped].astype(bool)).all(), np.flatnonzero(
        flipped & (deployed == labels.astype(bool))
    )
