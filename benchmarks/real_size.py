"""A default audit of a real-size model, against the cost of its own forward-backward passes.

As a new user would: torchvision's ``resnet18`` (random weights, seed 0, exported with
``torch.onnx``; 11.7M parameters, 3x224x224 inputs, 1000 classes) and, with
``--models``, ``mobilenet_v3_small`` (HardSwish and HardSigmoid: the layer graph lacks
HardSwish, so the model loads through onnx2torch only). Data: 4 images uniform in
[0, 1], labelled by the model.

The target (scale issue): the default audit (all local cores) finishes within the time of
500 forward-backward passes of the 4-image batch through the torch module, measured in
this run on this machine, under 4 GiB of memory summed over the audit's process tree
(main process and workers, sampled every 0.2 s), finds an adversarial example for each
image, and every analysis either runs or is skipped up front with its reason.

    python benchmarks/real_size.py [--models resnet18,mobilenet_v3_small] [--passes 500]

Prints, per model: the time of one forward-backward pass, the audit's wall time and its
ratio to ``passes`` passes (target <= 1), the peak memory of the process tree (target
<= 4 GiB), adversarial examples found per image, and every analysis's outcome, seconds
and reason.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

IMAGES = 4


def export_model(name: str, folder: Path) -> tuple[Path, Path]:
    """``name`` from torchvision with random weights, as ONNX, and 4 labelled images."""
    import torch
    import torchvision

    torch.manual_seed(0)
    module = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.rand(IMAGES, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    path = folder / f"{name}.onnx"
    torch.onnx.export(
        module, x[:1], str(path), input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False,
    )  # fmt: skip
    with torch.no_grad():
        y = module(x).argmax(1).numpy()
    data = folder / f"{name}.npz"
    np.savez(data, x=x.numpy(), y=y, lower=0.0, upper=1.0)
    return path, data


def pass_seconds(model: Path, data: Path, repeats: int = 5) -> float:
    """Median seconds of one forward-backward pass of the images through the model's torch
    module (the audit's onnx2torch module in float32, after a warm-up), the faster of one
    thread and the default thread count."""
    import torch

    from audit_core.onnx_import import load_onnx
    from audit_core.torch_module import build_torch_model

    loaded = load_onnx(model)
    module = build_torch_model(loaded.proto, loaded.graph, loaded.has_batch).module.float()
    x = torch.as_tensor(np.load(data)["x"])
    threads = torch.get_num_threads()
    best = math.inf
    for count in sorted({1, threads}):  # a loaded machine slows several threads most
        torch.set_num_threads(count)
        times = []
        for _ in range(repeats + 1):
            z = x.clone().requires_grad_(True)
            clock = time.perf_counter()
            module(z).logsumexp(1).sum().backward()
            times.append(time.perf_counter() - clock)
        best = min(best, float(np.median(times[1:])))
    torch.set_num_threads(threads)
    return best


class TreeMemory:
    """Peak resident memory summed over a process and its descendants (psutil, polled)."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        import psutil

        while not self._done.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
                total = 0
                for process in processes:
                    with contextlib.suppress(psutil.Error):
                        total += process.memory_info().rss
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            self._done.wait(self.interval)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


def audit(model: Path, data: Path, out: Path) -> tuple[float, int, int, str]:
    """The default audit with ``--export``: wall seconds, peak tree memory, exit code,
    stderr."""
    entry = "from robustness_audit.cli import main; raise SystemExit(main())"
    command = [sys.executable, "-c", entry, str(model), "--data", str(data), "--out", str(out),
               "--export", str(out / "export"), "--quiet"]  # fmt: skip
    clock = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        memory = TreeMemory(child.pid)
        code = child.wait()
        seconds = time.perf_counter() - clock
        peak = memory.stop()
        errors.seek(0)
        return seconds, peak, code, errors.read()


def adversarial_found(out: Path) -> str:
    path = out / "export" / "attack-bound.npz"
    if not path.exists():
        return "no attack-bound export"
    distance = np.load(path)["attack_distance"]
    return (
        f"{int(np.isfinite(distance).sum())}/{len(distance)} (median l2 {np.median(distance):.3g})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18")
    parser.add_argument("--passes", type=int, default=500)
    args = parser.parse_args()
    import os

    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            folder = Path(tmp) / name
            folder.mkdir()
            model, data = export_model(name, folder)
            before = pass_seconds(model, data)
            seconds, peak, code, errors = audit(model, data, folder / "out")
            one = min(before, pass_seconds(model, data))  # the quieter of before and after
            print(f"\n{name}: one forward-backward pass of {IMAGES} images {one:.3f} s; "
                  f"{args.passes} passes {args.passes * one:.0f} s")  # fmt: skip
            print(f"  audit: exit {code}, {seconds:.0f} s = {seconds / (args.passes * one):.2f}x "
                  f"the {args.passes} passes (target <= 1); peak memory of the process tree "
                  f"{peak / 2**30:.2f} GiB (target <= 4)")  # fmt: skip
            if code not in (0, 1):
                print(f"  stderr: {errors.strip()}")
                continue
            print(f"  adversarial examples found: {adversarial_found(folder / 'out')}")
            report = json.loads((folder / "out" / "report.json").read_text())
            for run in report["analyses"]:
                print(f"  {run['analysis']:<16}{run['outcome']:<9}{run['seconds'] or 0:>7.1f} s  "
                      f"{(run['reason'] or '')[:110]}")  # fmt: skip
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
