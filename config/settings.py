"""Typed settings, loaded once per process from TOML files and the environment."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from config.secrets import DEV_ONLY_MARKER, check_token
from config.secrets import KeySettings as KeySettings
from config.section import ConfigError as ConfigError
from config.section import Section as _Section
from config.waiting_room_settings import WaitingRoomSettings as WaitingRoomSettings
from config.waiting_room_settings import WaveConfig as WaveConfig
from config.worker_settings import WORKER_ROLES as WORKER_ROLES
from config.worker_settings import EmailSettings as EmailSettings
from config.worker_settings import NikSettings as NikSettings
from config.worker_settings import NikSimulatorSettings as NikSimulatorSettings
from config.worker_settings import WorkerMetricsSettings as WorkerMetricsSettings
from config.worker_settings import WorkerRole as WorkerRole

DEFAULT_CONFIG = Path(__file__).with_name("default.toml")
CONFIG_ENV = "GELOMBANG_CONFIG"


class PublicSettings(_Section):
    host: str
    port: int = Field(ge=0, le=65535)
    base_url: str
    # Bounds on what one door process holds for slow or abusive clients.
    max_connections: int = Field(ge=1)
    idle_timeout_seconds: float = Field(gt=0)
    body_timeout_seconds: float = Field(gt=0)
    max_header_bytes: int = Field(ge=1024, le=65536)
    max_headers: int = Field(ge=16, le=1000)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


class ClientLimitSettings(_Section):
    """The per-client-IP request limits: one bucket for POSTs, one for reads (off by default)."""

    enabled: bool
    rate_per_second: float = Field(gt=0)
    burst: int = Field(ge=1)
    # The reads' own bucket (status lookups, email links): polls must not use up
    # a client's POSTs, nor a flood of reads its registrations.
    read_rate_per_second: float = Field(default=10.0, gt=0)
    read_burst: int = Field(default=40, ge=1)
    # Client addresses each door process keeps a bucket for (least recently seen evicted).
    max_clients: int = Field(ge=1)
    # Comma-separated addresses or CIDR networks of the reverse proxies whose
    # X-Forwarded-For is believed ("" trusts none).
    trusted_proxies: str

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: str) -> str:
        for entry in _entries(value):
            try:
                _network(entry)
            except ValueError as exc:
                raise ValueError(f"not an IP address or network: {entry!r}") from exc
        return value

    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The trusted proxies, parsed."""
        return tuple(_network(entry) for entry in _entries(self.trusted_proxies))


def _entries(text: str) -> list[str]:
    return [entry.strip() for entry in text.split(",") if entry.strip()]


def _unix_ms(text: str) -> int:
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("needs a UTC offset, e.g. 2026-12-10T00:00:00Z")
    return int(moment.timestamp() * 1000)


class RegistrationIdSettings(_Section):
    """Which ids without the door's keyed check are still looked up (issued before it)."""

    # RFC 3339 times, "" for none: an id without a valid check is looked up in
    # PostgreSQL only when its time is in [legacy_from, legacy_until).
    legacy_from: str = ""
    legacy_until: str = ""

    @field_validator("legacy_from", "legacy_until")
    @classmethod
    def _is_a_time(cls, value: str) -> str:
        if value:
            _unix_ms(value)
        return value

    @model_validator(mode="after")
    def _window_is_ordered(self) -> RegistrationIdSettings:
        if self.legacy_from and not self.legacy_until:
            raise ValueError("legacy_from needs legacy_until")
        window = self.legacy_window_ms()
        if window is not None and window[0] >= window[1]:
            raise ValueError("legacy_from must be before legacy_until")
        return self

    def legacy_window_ms(self) -> tuple[int, int] | None:
        """The legacy window in Unix milliseconds, or None when there is none."""
        if not self.legacy_until:
            return None
        first = _unix_ms(self.legacy_from) if self.legacy_from else 0
        return first, _unix_ms(self.legacy_until)


class AdminSettings(_Section):
    # Loopback unless configured (config/default.toml says so too): the admin
    # port serves /metrics without a token, so listening wider is a choice made
    # with a NetworkPolicy or firewall beside it (deploy/kubernetes/configmap.yaml).
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    token: str = Field(repr=False)  # secrets stay out of reprs and tracebacks
    # An identical authenticated read (same route, query and address) is audited
    # once per this many seconds: a page that polls adds one entry, not one a poll.
    read_audit_seconds: float = Field(default=300.0, gt=0)

    @field_validator("token")
    @classmethod
    def _token_looks_random(cls, value: str) -> str:
        return check_token(value)

    @property
    def local_url(self) -> str:
        """The admin port as seen from this machine (a wildcard address means loopback)."""
        host = self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"


class RedisSettings(_Section):
    url: str
    timeout_seconds: float = Field(gt=0)
    # How long the door asks what became of an admission call whose reply was
    # lost; the call's outcome record outlives it (keys.ADMISSION_OUTCOME_SECONDS).
    outcome_check_seconds: float = Field(default=2.0, gt=0, le=10)
    # A Redis Cluster: `url` names one node; `cluster_seeds` ("host:port") more, so a
    # process can start while one is down (docs/cluster.md).
    cluster: bool = False
    cluster_seeds: list[str] = Field(default_factory=list)

    @field_validator("cluster_seeds")
    @classmethod
    def _seeds_are_addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"not host:port: {entry!r}")
        return value


class PostgresSettings(_Section):
    dsn: str
    # The door's pool for status reads: small, and every call bounded, so a
    # slow or dead PostgreSQL never holds up intake.
    door_pool_max: int = Field(ge=1, le=100)
    door_timeout_seconds: float = Field(gt=0)


class DrainSettings(_Section):
    """The drain workers (`gelombang worker store`)."""

    # Batches in flight per worker process (0: one per partition).
    concurrency: int = Field(ge=0, le=1024)
    batch_size: int = Field(ge=1, le=50_000)
    block_ms: int = Field(ge=1, le=60_000)
    # Entries pending this long with a consumer are taken over by another.
    claim_idle_seconds: float = Field(gt=0)
    # An entry PostgreSQL refused this many times is dead-lettered (outages,
    # restarts and lease takeovers never count: workers/drain/refusals.py).
    max_refusals: int = Field(ge=1)
    heartbeat_seconds: float = Field(gt=0)
    # How long a handed-off job's marker stays in Redis: a relay repeated
    # within this window is a no-op.
    handoff_marker_seconds: int = Field(ge=60)
    # How often each worker refills the verification streams from the outbox:
    # rows the window held back, and rows at least this old whose own worker
    # died between commit and hand-off.
    outbox_sweep_seconds: float = Field(gt=0)
    # The most jobs one partition's stream of one kind holds in Redis; the
    # rest of a verification backlog waits in PostgreSQL (workers/drain/handoff.py).
    # 0: no limit.
    verification_window: int = Field(default=50_000, ge=0)
    # Back-off after PostgreSQL or Redis errors: doubles up to this.
    retry_max_seconds: float = Field(gt=0)


@dataclass(frozen=True, slots=True)
class Flag:
    """The `gelombang admission set` flag of a live setting whose name is not its field's."""

    name: str


class AdmissionPolicy(_Section):
    """The admission settings ops change live (global figures): their one field list.

    Each field's type, bound and description also make the admin API's checks
    (intake/admin.py), the live settings' hash (queueing/live_settings.py) and
    the CLI's flags (intake/admission_command.py).
    """

    rate_per_second: Annotated[float, Field(gt=0, description="tokens per second"),
                               Flag("--rate")]
    burst: int = Field(ge=1, description="bucket capacity")
    backlog_high_water: int = Field(
        ge=1, description="entries waiting to be stored past which intake answers 503")
    enabled: bool = Field(description="rate limiting on or off")
    open: bool = Field(description="intake open or closed")


class AdmissionSettings(AdmissionPolicy):
    """Admission figures as configured; live changes are layered on top in Redis."""

    refresh_seconds: float = Field(gt=0, le=2.0)

    def policy(self) -> AdmissionPolicy:
        """The policy as configuration gives it, before live changes."""
        return AdmissionPolicy.model_validate(
            self.model_dump(include=set(AdmissionPolicy.model_fields)))


class QueueSettings(_Section):
    partitions: int = Field(ge=1, le=1024)
    group_max: int = Field(ge=1, le=10_000)
    pending_max: int = Field(ge=1)
    idempotency_ttl_seconds: int = Field(ge=1)
    # Most entries kept in each priority lane stream (per partition and kind),
    # trimmed approximately: the bound while no verification worker reads them.
    priority_max_length: int = Field(default=100_000, ge=100)


class DoorSettings(_Section):
    processes: int = Field(ge=1, le=256)
    drain_grace_seconds: float = Field(ge=0)
    shutdown_deadline_seconds: float = Field(gt=0)


class SecuritySettings(_Section):
    """Whether this deployment holds real personal data (docs/security.md, "Production")."""

    # true (the container image sets it): refuse to start unless the links that
    # carry personal data or tokens are TLS and no secret is a public dev value.
    # The dev stack and the tests run without TLS, hence false by default.
    production: bool


def _is_https(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(parts.hostname)


class NiceSettings(_Section):
    """How much each process of a one-machine stack yields the CPU to the door.

    Read by the launchers that start the whole stack on one machine (`gelombang
    dev up|run`, the fault drills, the wave benchmark: gelombang/priority.py),
    never by the processes themselves: in a deployment each role has its own
    container or unit, and the CPU is shared out by cgroups (CPU requests,
    CPUWeight=), which a niceness cannot reach (docs/deployment.md).
    """

    # Added to the launcher's own niceness (0 to 19, higher yields more).
    door: int = Field(default=0, ge=0, le=19)
    drain: int = Field(default=5, ge=0, le=19)
    email: int = Field(default=10, ge=0, le=19)
    nik: int = Field(default=10, ge=0, le=19)
    # The mail sink and the NIK simulator.
    sandboxes: int = Field(default=10, ge=0, le=19)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    # "text" for people (the default), "json" for machines: one object per line
    # (config/log_format.py).
    format: Literal["text", "json"]


class Settings(BaseSettings):
    """Every setting of a Gelombang process."""

    model_config = SettingsConfigDict(
        env_prefix="GELOMBANG_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    public: PublicSettings
    client_limit: ClientLimitSettings
    registration_ids: RegistrationIdSettings
    admin: AdminSettings
    redis: RedisSettings
    postgres: PostgresSettings
    admission: AdmissionSettings
    queue: QueueSettings
    drain: DrainSettings
    email: EmailSettings
    nik: NikSettings
    nik_sim: NikSimulatorSettings
    keys: KeySettings
    door: DoorSettings
    nice: NiceSettings
    logging: LoggingSettings
    waiting_room: WaitingRoomSettings = Field(default_factory=WaitingRoomSettings)
    worker_metrics: WorkerMetricsSettings
    security: SecuritySettings

    def production_problems(self) -> list[str]:
        """What `security.production = true` refuses in this configuration (keys named)."""
        if not self.security.production:
            return []
        problems = []
        # Each link carries personal data or a secret: the signed links (tokens)
        # in emails, the NIK with name and birth date, the applicant's address.
        if not _is_https(self.public.base_url):
            problems.append("public.base_url: must be https:// in production "
                            "(the emailed links carry verification tokens)")
        if not _is_https(self.nik.base_url):
            problems.append("nik.base_url: must be https:// in production")
        if self.email.smtp_tls == "none":
            problems.append('email.smtp_tls: must be "starttls" or "tls" in production')
        if not self.admin.token:
            problems.append("admin.token: required in production")
        elif DEV_ONLY_MARKER in self.admin.token.lower():
            problems.append("admin.token: a public dev-only value, refused in production")
        problems += [f"{name}: a public dev-only value, refused in production"
                     for name in self.keys.dev_only_keys()]
        return problems

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win, key by key within a table: one source per file,
        # because a single multi-file TOML source replaces whole tables.
        files = [TomlConfigSettingsSource(settings_cls, DEFAULT_CONFIG)]
        extra = os.environ.get(CONFIG_ENV)
        if extra:
            files.insert(0, TomlConfigSettingsSource(settings_cls, Path(extra)))
        return (init_settings, env_settings, *files)

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Load and validate, raising ConfigError that names each bad key."""
        extra = os.environ.get(CONFIG_ENV)
        if extra and not Path(extra).is_file():
            raise ConfigError(f"{CONFIG_ENV}: no such file: {extra}")
        try:
            settings = cls(**overrides)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}"
                for err in exc.errors(include_url=False, include_input=False)
            )
            raise ConfigError(problems) from None
        refused = settings.production_problems()
        if refused:
            raise ConfigError("; ".join(refused))
        return settings
