"""Config validation shared by every package's config section.

It lives below `replay`, `learner`, `actors` and `launch` so that each can validate its own section
without importing a package above it (tests/test_layering.py holds the allowed import graph).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value outside its allowed range; the message names the field and the fix."""


def require(ok: bool, field: str, value: object, allowed: str) -> None:
    """Raise ConfigError naming `field` when `ok` is false."""
    if not ok:
        raise ConfigError(f"config field `{field}` = {value!r} is invalid: allowed {allowed}")
