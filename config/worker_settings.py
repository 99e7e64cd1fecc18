"""The settings sections of the verification workers, their sandboxes and worker metrics."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from config.section import Section as _Section

# The worker processes that export their own metrics (workers/metrics.py).
WorkerRole = Literal["drain", "email", "nik"]
WORKER_ROLES: tuple[WorkerRole, ...] = ("drain", "email", "nik")


class EmailSettings(_Section):
    """Email verification (`gelombang worker email`) and the dev mail sink."""

    smtp_host: str
    smtp_port: int = Field(ge=1, le=65535)
    smtp_tls: Literal["none", "starttls", "tls"]
    smtp_username: str
    smtp_password: str = Field(repr=False)
    from_address: str
    # Outbound messages per second over all email workers (a Redis bucket).
    rate_per_second: float = Field(gt=0)
    # Batches of jobs each worker process has in hand at once.
    concurrency: int = Field(ge=1, le=1024)
    # Jobs read, loaded, sent and recorded together.
    batch_size: int = Field(default=100, ge=1, le=10_000)
    # SMTP connections each worker keeps open and reuses.
    connections: int = Field(ge=1, le=100)
    # PostgreSQL connections of each worker process (one query per batch loads
    # its rows, one statement records its outcomes).
    pg_connections: int = Field(default=2, ge=1, le=32)
    max_attempts: int = Field(ge=1)
    retry_base_seconds: float = Field(gt=0)
    retry_max_seconds: float = Field(gt=0)
    token_ttl_hours: float = Field(gt=0)
    claim_idle_seconds: float = Field(gt=0)
    # One resend per registration this often; also how long a status poll's
    # email job holds the registration's place in the priority lane.
    resend_interval_seconds: int = Field(default=60, ge=1, le=86_400)
    # Where `gelombang mail-sink` writes each message as a .eml file
    # (GELOMBANG_MAILDIR wins), relative to the working directory.
    maildir: str


class NikSettings(_Section):
    """NIK verification against the ministry's API (`gelombang worker nik`)."""

    base_url: str
    username: str
    password: str = Field(repr=False)
    timeout_seconds: float = Field(gt=0)
    # The ministry's capacity, shared by every NIK worker (a Redis bucket).
    rate_per_second: float = Field(gt=0)
    burst: int = Field(ge=1)
    # Calls in flight at once per worker process.
    concurrency: int = Field(ge=1, le=4096)
    # Jobs read, loaded and recorded together, and batches in hand per process.
    batch_size: int = Field(default=100, ge=1, le=10_000)
    batches_in_hand: int = Field(default=8, ge=1, le=1024)
    # PostgreSQL connections of each worker process, whatever the calls in flight.
    pg_connections: int = Field(default=2, ge=1, le=32)
    max_attempts: int = Field(ge=1)
    retry_base_seconds: float = Field(gt=0)
    retry_max_seconds: float = Field(gt=0)
    breaker_failures: int = Field(ge=1)
    breaker_open_seconds: float = Field(gt=0)
    claim_idle_seconds: float = Field(gt=0)
    # A status poll puts a pending NIK check in the priority lane at most this often.
    priority_hold_seconds: int = Field(default=60, ge=1, le=86_400)


class NikSimulatorSettings(_Section):
    """The bundled ministry API simulator (`gelombang nik-sim`), for dev and tests."""

    host: str
    port: int = Field(ge=0, le=65535)
    capacity_per_second: float = Field(gt=0)
    latency_ms_median: float = Field(ge=0)
    latency_ms_p99: float = Field(ge=0)
    error_rate: float = Field(ge=0, le=1)
    # Which synthetic NIKs exist is a pure function of this seed and the NIK.
    population_seed: int
    existing_share: float = Field(ge=0, le=1)


class WorkerMetricsSettings(_Section):
    """Each worker process's own GET /metrics listener (workers/metrics.py)."""

    enabled: bool
    host: str
    # The first port of each role's range; 0 turns that role's listener off.
    drain_port: int = Field(ge=0, le=65535)
    email_port: int = Field(ge=0, le=65535)
    nik_port: int = Field(ge=0, le=65535)
    # Worker processes of one role on one machine: each takes the first free
    # port of [<role>_port, <role>_port + ports_per_role).
    ports_per_role: int = Field(ge=1, le=1000)

    @model_validator(mode="after")
    def _ranges_fit_and_stay_apart(self) -> WorkerMetricsSettings:
        taken: list[tuple[WorkerRole, range]] = []
        for role in WORKER_ROLES:
            first = self.first_port(role)
            if first == 0:
                continue
            if first + self.ports_per_role > 65536:
                raise ValueError(f"{role}_port + ports_per_role runs past port 65535")
            ports = range(first, first + self.ports_per_role)
            for other, other_ports in taken:
                if ports.start < other_ports.stop and other_ports.start < ports.stop:
                    raise ValueError(f"the {role} and {other} port ranges overlap"
                                     f" (ports_per_role = {self.ports_per_role})")
            taken.append((role, ports))
        return self

    def first_port(self, role: WorkerRole) -> int:
        """The first port of a role's range as configured (0: off)."""
        return {"drain": self.drain_port, "email": self.email_port, "nik": self.nik_port}[role]

    def ports(self, role: WorkerRole) -> range:
        """The ports a process of this role may listen on; empty when its metrics are off."""
        first = self.first_port(role)
        if not self.enabled or first == 0:
            return range(0)
        return range(first, first + self.ports_per_role)
