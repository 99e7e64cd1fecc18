"""What every settings section shares: frozen, no unknown keys; the error that names a key."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""


class Section(BaseModel):
    """A table of the config: frozen, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)
