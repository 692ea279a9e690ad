"""Built-in analyses of robustness-audit (import package ``audit_plugins``).

Each module is a plugin exactly like a third-party one: it implements
``audit_register_analyses`` and is listed in the ``robustness_audit``
entry-point group of this distribution's pyproject.toml. Plugins import
``audit_core`` only, never each other.
"""
