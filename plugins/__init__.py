"""Built-in analyses of robustness-audit (import package ``audit_plugins``).

One package per plugin, each a plugin exactly like a third-party one: its
``__init__`` implements ``audit_register_analyses`` and holds the ``Analysis``
classes and their ``Config`` dataclasses (nothing heavy is imported there; ``run()``
imports the computation); computation modules return result dataclasses and one
``findings.py`` turns them into findings. Each package is listed in the
``robustness_audit`` entry-point group of this distribution's pyproject.toml.
Plugins import ``audit_core`` only, never each other.
"""
