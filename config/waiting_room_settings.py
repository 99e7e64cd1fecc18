"""The waiting room's settings (`[waiting_room]`, docs/waiting-room.md)."""

from __future__ import annotations

from pydantic import Field, model_validator

from config.section import Section as _Section


class WaveConfig(_Section):
    """A wave scheduled by configuration (docs/waiting-room.md); the admin API adds more."""

    wave: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    # Unix seconds: the pre-queue opens, the draw and the opening, the end of joining.
    prequeue_from: int = Field(ge=0)
    opens_at: int = Field(ge=0)
    closes_at: int = Field(ge=0)

    @model_validator(mode="after")
    def _in_order(self) -> WaveConfig:
        if not self.prequeue_from <= self.opens_at < self.closes_at:
            raise ValueError("waiting_room.waves: needs prequeue_from <= opens_at < closes_at")
        return self


class WaitingRoomSettings(_Section):
    """The fair waiting room: tickets instead of bare refusals (docs/waiting-room.md)."""

    # false: refusals are answered as before, without tickets.
    enabled: bool = True
    # How often each door reads the line's state (one script call per door).
    tick_seconds: float = Field(default=1.0, gt=0, le=10)
    # A ticket not polled for this long is skipped (not counted ahead of anyone).
    idle_seconds: float = Field(default=120.0, gt=0)
    # How long a ticket whose turn came may register.
    turn_seconds: float = Field(default=300.0, gt=0)
    # The poll interval the door advises (clients add +-20 % jitter).
    poll_seconds: float = Field(default=20.0, gt=0)
    # Positions released per second; 0: the admission rate in force.
    release_rate: float = Field(default=0.0, ge=0)
    waves: list[WaveConfig] = Field(default_factory=list)
