"""robustness-audit's entry points: the ``audit`` command and the Python API.

This package sits above ``audit_reports``: imports go one way,
``audit_core`` <- ``audit_plugins`` <- ``audit_reports`` <- ``robustness_audit``.
"""
