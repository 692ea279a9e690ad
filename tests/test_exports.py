"""``--export DIR``: where each analysis's arrays go."""

from __future__ import annotations

import numpy as np

from audit_core.exports import RUN_WIDE, write_exports


def test_one_model_writes_flat_files(tmp_path) -> None:
    paths = write_exports({("net", "attack-bound"): {"a": np.arange(3)}}, tmp_path)
    assert paths == [tmp_path / "attack-bound.npz"]
    np.testing.assert_array_equal(np.load(paths[0])["a"], np.arange(3))


def test_several_models_get_folders_and_run_wide_analyses_stay_on_top(tmp_path) -> None:
    exports = {
        ("a", "attack-bound"): {"d": np.zeros(2)},
        ("b", "attack-bound"): {"d": np.ones(2)},
        (RUN_WIDE, "model-transfer"): {"accuracy": np.eye(2)},
    }
    written = write_exports(exports, tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "a/attack-bound.npz",
        "b/attack-bound.npz",
        "model-transfer.npz",
    ]
    assert not list(tmp_path.glob(".*.tmp"))  # temporary files moved into place
