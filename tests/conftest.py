"""Hypothesis profiles, from Troupe's own pytest plugin (``actors.pytest_plugin``).

``troupe-ci`` (fixed seed, no example database; chosen when ``CI`` is set, so CI runs
are reproducible), ``troupe-dev`` (the default), ``troupe-long`` (10,000 cases:
``HYPOTHESIS_PROFILE=troupe-long python -m pytest tests/test_properties.py``).
"""

from __future__ import annotations

import os

from hypothesis import settings

pytest_plugins = ["pytester"]

_DEFAULT = "troupe-ci" if os.environ.get("CI") else "troupe-dev"
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or _DEFAULT
settings.load_profile(
    {"ci": "troupe-ci", "dev": "troupe-dev", "long": "troupe-long"}.get(_PROFILE, _PROFILE)
)
