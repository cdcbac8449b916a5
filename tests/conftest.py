"""Shared Hypothesis profiles.

``ci`` (fixed seed, no example database; chosen when ``CI`` is set, so CI runs are
reproducible), ``dev`` (the default), ``long`` (10,000 cases:
``HYPOTHESIS_PROFILE=long python -m pytest tests/test_properties.py``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_BASE = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile("ci", _BASE, max_examples=60, derandomize=True, database=None)
settings.register_profile("dev", _BASE, max_examples=40)
settings.register_profile("long", _BASE, max_examples=10_000)
_DEFAULT = "ci" if os.environ.get("CI") else "dev"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or _DEFAULT)
