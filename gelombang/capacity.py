"""A capacity plan: the fleet an opening takes, from per-registration figures.

Every line is one formula over measured figures (`capacity_figures`), the
operator's inputs (`PlanInputs`) and the deployment's configured sizes
(`Config`, config/default.toml); `Line.formula` spells it out with the
numbers put in, so a reader can check each figure by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from gelombang.capacity_figures import Figure

MICROSECONDS: Final = 1_000_000
# Host memory for Redis is planned at twice its used_memory: allocator
# fragmentation and the copy-on-write of an AOF rewrite (docs/storage.md).
# An assumption from that page's reasoning, not a measurement.
REDIS_HOST_FACTOR: Final = 2.0


@dataclass(frozen=True)
class Config:
    """Sizes the plan takes from the deployment's configuration (config/default.toml)."""

    partitions: int = 8                 # queue.partitions
    backlog_high_water: int = 2_000_000  # admission.backlog_high_water
    drain_batch_size: int = 500         # drain.batch_size
    email_batch_size: int = 100         # email.batch_size
    nik_batch_size: int = 100           # nik.batch_size
    email_pg_connections: int = 2       # email.pg_connections
    nik_pg_connections: int = 2         # nik.pg_connections
    door_pool_max: int = 4              # postgres.door_pool_max


@dataclass(frozen=True)
class PlanInputs:
    """What the operator asks for: the opening's rate and length, the outside limits."""

    rate: float            # registrations per second at the peak
    volume: int            # registrations in the wave
    ministry: float        # NIK checks per second the ministry allows
    relay: float           # emails per second the relay allows
    cores: int = 16        # per machine
    utilisation: float = 0.6  # target share of each core, leaving headroom
    config: Config = field(default_factory=Config)


@dataclass(frozen=True)
class Line:
    """One figure of the plan: what, how much, and the formula with its inputs."""

    section: str
    what: str
    value: float
    unit: str
    formula: str


@dataclass(frozen=True)
class Plan:
    """The plan's lines and the figures it used."""

    inputs: PlanInputs
    figures: dict[str, Figure]
    lines: list[Line]

    def value(self, what: str) -> float:
        """The value of the line named `what` (for tests and the headline)."""
        return next(line.value for line in self.lines if line.what == what)


def _n(value: float) -> str:
    """A number as the formulas show it: thousands separated, at most 3 significant decimals."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"


def make_plan(inputs: PlanInputs, figures: dict[str, Figure]) -> Plan:
    """Every line of the plan, in the order it is read."""
    f = {name: figure.value for name, figure in figures.items()}
    c = inputs.config
    rate, util, cores, volume = inputs.rate, inputs.utilisation, inputs.cores, inputs.volume
    budget = util * MICROSECONDS  # µs of CPU one core gives per second at the target load
    per_core = f"{util:.0%} of 1e6 µs/s"
    lines: list[Line] = []

    def add(section: str, what: str, value: float, unit: str, formula: str) -> float:
        lines.append(Line(section, what, value, unit, formula))
        return value

    # Door: CPU-bound, one process per core (docs/cluster.md).
    door_cores = rate * f["door_cpu_us"] / budget
    doors = add("door", "door processes", max(1, math.ceil(door_cores)), "processes",
                f"ceil({_n(rate)}/s x {_n(f['door_cpu_us'])} µs / {per_core}) "
                f"= ceil({door_cores:.2f})")
    add("door", "door machines", math.ceil(doors / cores), "machines",
        f"ceil({_n(doors)} processes / {cores} cores)")
    add("door", "door memory", doors * f["door_rss_mib"], "MiB",
        f"{_n(doors)} x {_n(f['door_rss_mib'])} MiB")

    # Drain: worker CPU sets the processes; a partition is stored by one
    # process at a time, in batches one after another, so the partitions bound
    # the rate too (the measured per-partition rate, at the same headroom).
    drain_cores = rate * f["drain_worker_cpu_us"] / budget
    drains = add("drain", "drain worker processes", max(1, math.ceil(drain_cores)), "processes",
                 f"ceil({_n(rate)}/s x {_n(f['drain_worker_cpu_us'])} µs / {per_core}) "
                 f"= ceil({drain_cores:.2f})")
    needed = rate / (f["drain_partition_rows_per_s"] * util)
    partitions = add("drain", "partitions", max(c.partitions, math.ceil(needed), drains),
                     "partitions",
                     f"max(configured {c.partitions}, ceil({_n(rate)}/s / "
                     f"({_n(f['drain_partition_rows_per_s'])}/s x {util:.0%})) = "
                     f"{math.ceil(needed)}, drain processes {_n(drains)})")

    # Verification: workers sized for the outside limits; the backlog lasts
    # as long as the slower of the limit and the workers' capacity takes.
    def verifier(kind: str, limit: float, figure: str) -> tuple[float, float]:
        processes = max(1, math.ceil(limit * f[figure] / budget))
        add("verification", f"{kind} worker processes", processes, "processes",
            f"ceil({_n(limit)}/s x {_n(f[figure])} µs / {per_core})")
        capacity = processes * budget / f[figure]
        speed = min(limit, capacity)
        done = max(volume / rate, volume / speed)
        add("verification", f"{kind} checks done after", done, "s",
            f"max(wave {_n(volume)} / {_n(rate)}/s, {_n(volume)} / min({_n(limit)}/s limit, "
            f"{_n(capacity)}/s workers))")
        add("verification", f"{kind} backlog at the wave's end",
            max(0.0, volume - volume / rate * speed), "registrations",
            f"{_n(volume)} - {_n(volume / rate)} s x {_n(speed)}/s")
        return processes, speed

    emailers, email_rate = verifier("email", inputs.relay, "email_worker_cpu_us")
    niks, nik_rate = verifier("NIK", inputs.ministry, "nik_worker_cpu_us")
    # Measured per registration verified both ways; half charged to each check.
    verify_pg = (email_rate + nik_rate) * f["verification_postgres_cpu_us"] / 2
    verify_redis = (email_rate + nik_rate) * f["verification_redis_cpu_us"] / 2

    # Redis: one core per primary (it runs commands on one thread).
    redis_us = rate * (f["admission_redis_cpu_us"] + f["drain_redis_cpu_us"]) + verify_redis
    primaries = add("redis", "Redis primaries", max(1, math.ceil(redis_us / budget)), "primaries",
                    f"ceil(({_n(rate)}/s x ({_n(f['admission_redis_cpu_us'])} + "
                    f"{_n(f['drain_redis_cpu_us'])}) µs + ({_n(email_rate)} + {_n(nik_rate)})/s "
                    f"x {_n(f['verification_redis_cpu_us'])}/2 µs) / {per_core}) "
                    f"= ceil({redis_us / budget:.2f})")
    queued = min(volume, c.backlog_high_water)
    used = queued * f["redis_bytes_queued"] + volume * f["redis_bytes_after_drain"]
    add("redis", "Redis used_memory", used / 2**30, "GiB",
        f"min({_n(volume)}, high water {_n(c.backlog_high_water)}) x "
        f"{_n(f['redis_bytes_queued'])} B + {_n(volume)} x {_n(f['redis_bytes_after_drain'])} B")
    add("redis", "Redis host memory per primary", used * REDIS_HOST_FACTOR / primaries / 2**30,
        "GiB", f"{REDIS_HOST_FACTOR:g} x used_memory / {_n(primaries)} primaries")

    # PostgreSQL: the drain's inserts at the intake rate, the verifiers'
    # updates at theirs, all at the peak together.
    pg_us = rate * f["drain_postgres_cpu_us"] + verify_pg
    pg_cores = add(
        "postgres", "PostgreSQL cores", max(1, math.ceil(pg_us / budget)), "cores",
        f"ceil(({_n(rate)}/s x {_n(f['drain_postgres_cpu_us'])} µs + ({_n(email_rate)} + "
        f"{_n(nik_rate)})/s x {_n(f['verification_postgres_cpu_us'])}/2 µs) / {per_core}) "
        f"= ceil({pg_us / budget:.2f})")
    add("postgres", "PostgreSQL rows written", rate + email_rate + nik_rate, "rows/s",
        f"{_n(rate)} inserted + {_n(email_rate)} + {_n(nik_rate)} updated")
    add("postgres", "PostgreSQL commits", rate / c.drain_batch_size
        + email_rate / c.email_batch_size + nik_rate / c.nik_batch_size, "commits/s",
        f"{_n(rate)}/{c.drain_batch_size} + {_n(email_rate)}/{c.email_batch_size} + "
        f"{_n(nik_rate)}/{c.nik_batch_size} (one per batch)")
    add("postgres", "PostgreSQL connections", drains * (partitions + 1)
        + emailers * c.email_pg_connections + niks * c.nik_pg_connections
        + doors * c.door_pool_max, "connections",
        f"{_n(drains)} drain x ({_n(partitions)} partitions + 1) + {_n(emailers)} email x "
        f"{c.email_pg_connections} + {_n(niks)} NIK x {c.nik_pg_connections} + {_n(doors)} "
        f"doors x {c.door_pool_max}")
    add("postgres", "PostgreSQL storage", volume * f["postgres_bytes_per_row"] / 2**30, "GiB",
        f"{_n(volume)} x {_n(f['postgres_bytes_per_row'])} B")

    total = doors + drains + emailers + niks + primaries + pg_cores
    add("fleet", "cores", total, "cores",
        f"{_n(doors)} door + {_n(drains)} drain + {_n(emailers)} email + {_n(niks)} NIK + "
        f"{_n(primaries)} Redis + {_n(pg_cores)} PostgreSQL")
    add("fleet", "machines", math.ceil(total / cores), "machines",
        f"ceil({_n(total)} cores / {cores} per machine), packed")
    return Plan(inputs, figures, lines)
