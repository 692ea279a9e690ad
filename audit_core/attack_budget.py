"""The attack budget of a run: the ``[attacks]`` config table.

One budget for every minimal-norm search of the run (``audit_core.attack_service``
runs the search once per model and norm with it, and every analysis that asks gets
that one result). Set it in ``audit.toml``::

    [attacks]
    steps = 60
    restarts = 5

or with ``-o attacks.steps=60``; ``audit plugins`` lists the keys. Plain data (no
torch), so that the table can be validated and listed without loading the attacks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from audit_core.config import check_config

ATTACKS_TABLE = "attacks"
"""Name of the table (``[attacks]``, ``-o attacks.KEY=VALUE``); no analysis may take it."""


@dataclass(frozen=True)
class MinimalAttackConfig:
    """Budget of the minimal-norm search (:func:`audit_core.attacks.minimal_adversarial`)."""

    steps: int = 40
    """PGD iterations per restart and bisection step."""
    restarts: int = 10
    """PGD starts per bisection step: the first from the best adversarial direction found so
    far (rescaled into the ball), the second from the clean point, the others from uniform
    random points of the ball (Madry et al. 2018)."""
    step_fraction: float = 0.08
    """PGD step size as a fraction of the radius (l2: length of a normalised-gradient step;
    linf: size of a sign step)."""
    bisection_steps: int = 10
    """Halvings of the radius interval [lo, best distance] per sample."""
    bisection_rtol: float = 1e-3
    """A sample leaves the bisection once hi - lo <= bisection_rtol * hi."""
    deepfool_iter: int = 50
    """DeepFool iterations for the first adversarial point (Moosavi-Dezfooli et al. 2016)."""
    deepfool_classes: int = 10
    """Classes DeepFool linearises at each iterate: those with the largest logits besides
    the label (one backward pass each; the paper's implementation uses 10)."""
    overshoot: float = 0.02
    """DeepFool overshoot (the line search removes it afterwards)."""
    line_search_steps: int = 40
    """Halvings of t in the line search along x_adv - x that shrinks every point found."""
    search_radius: float = 0.0
    """PGD radius tried for samples DeepFool did not break; 0: the diameter of the input box
    in the norm, or 4 max(1, ||x||) without finite bounds."""
    search_levels: int = 6
    """Radii of the wide search, smallest first: the search radius times 2^-k for k =
    search_levels - 1, ..., 0 (stops at the first radius where PGD finds a point)."""
    preset: str = "auto"
    """``full``: this budget as set, in float64; ``light``: at most 2 restarts, 20 steps,
    5 bisection steps, 20 line-search steps, 20 DeepFool iterations and 4 search levels, in
    float32 (every point found is verified in float64 and onnxruntime anyway); ``auto``:
    light for models whose forward pass costs more than 1e8 multiply-adds per sample
    (resnet18: 1.8e9), full below. (Not ``effort``: that is ``certificates.effort``, the
    certificates' own budget; no analysis shares a key with this table.)"""
    batch_size: int = 256
    """Samples searched together (bounds the memory of DeepFool's gradients, batch_size x
    deepfool_classes x input size floats)."""

    def __post_init__(self) -> None:
        check_config(
            self,
            minimum={
                "steps": 1,
                "restarts": 1,
                "bisection_steps": 1,
                "bisection_rtol": 0,
                "deepfool_iter": 1,
                "deepfool_classes": 1,
                "overshoot": 0,
                "line_search_steps": 0,
                "search_radius": 0,
                "search_levels": 1,
                "batch_size": 1,
            },
            positive=("step_fraction",),
            choices={"preset": PRESETS},
        )

    def effective(self, forward_macs: int) -> MinimalAttackConfig:
        """The budget the search runs with on a model of ``forward_macs`` multiply-adds per
        sample (``preset``: ``auto`` becomes ``full`` or ``light``)."""
        preset = self.preset
        if preset == "auto":
            preset = "light" if forward_macs > LARGE_MODEL_MACS else "full"
        if preset == "full":
            return replace(self, preset="full")
        caps = {name: min(getattr(self, name), cap) for name, cap in LIGHT_CAPS.items()}
        return replace(self, preset="light", **caps)

    @property
    def float32(self) -> bool:
        """Whether the search runs in float32 (``light``)."""
        return self.preset == "light"

    def work_units(self, num_samples: int) -> int:
        """Total work units of the search on ``num_samples`` samples.

        A unit is one sample going through one phase; the phases are DeepFool, the wide PGD
        search for samples DeepFool missed, and each bisection step (samples that need no
        work in a phase, e.g. misclassified ones, still count as done).
        """
        return num_samples * (self.bisection_steps + 2)


PRESETS = ("auto", "full", "light")
LARGE_MODEL_MACS = 1e7
"""``preset = "auto"`` runs light above this many multiply-adds per sample and forward pass
(the zoo and corpus models are far below; a 3x3 conv of 8 filters on 3x512x512 inputs,
5.6e7, took over 600 s for 4 images with the full budget and 250 s with the light one,
on 2 loaded cores)."""
LIGHT_CAPS = {
    "restarts": 2,
    "steps": 20,
    "bisection_steps": 5,
    "line_search_steps": 20,
    "deepfool_iter": 20,
    "search_levels": 4,
}
"""The light budget: each key at most this value."""

ATTACK_KEYS = frozenset(f.name for f in fields(MinimalAttackConfig))
"""The keys of the ``[attacks]`` table."""
