"""The errors a user can fix by changing a setting: a leaf module that config, registry and runs import."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration value is out of range, unknown, or does not fit the model it configures."""
