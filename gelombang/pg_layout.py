"""Where PostgreSQL's binaries are, which user runs them, and where a cluster's files live."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gelombang.processes import ServiceError

# The cluster's superuser, whatever OS user runs initdb.
POSTGRES_USER = "postgres"
# PostgreSQL refuses to run as root, so root runs it as this system user (Debian's).
SYSTEM_USER = "postgres"
# Server binaries are versioned directories on Debian; the highest version wins.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
# Root's clusters whose folder the postgres user cannot reach (a checkout under /root,
# mode 0700) live here instead, behind a symlink at the folder asked for.
FALLBACK_ROOT = Path("/var/tmp/gelombang-postgres")
# sun_path holds 108 bytes with the terminating NUL.
_SOCKET_PATH_MAX = 107


@dataclass(frozen=True)
class PostgresBinaries:
    """The server and client programs of one PostgreSQL installation."""

    bindir: Path

    @classmethod
    def find(cls) -> PostgresBinaries:
        """The highest version under /usr/lib/postgresql, else whatever is on PATH."""
        candidates = [
            path.parent
            for path in DEBIAN_ROOT.glob("*/bin/postgres")
            if path.parent.parent.name.replace(".", "").isdigit()
        ]
        if candidates:
            return cls(max(candidates, key=lambda b: [int(p) for p in b.parent.name.split(".")]))
        pg_config = shutil.which("pg_config")
        if pg_config:
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=False
            ).stdout.strip()
            if bindir and (Path(bindir) / "postgres").exists():
                return cls(Path(bindir))
        postgres = shutil.which("postgres")
        if postgres:
            return cls(Path(postgres).parent)
        raise ServiceError(
            "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin "
            "and on PATH); run `make sysdeps`"
        )

    @property
    def postgres(self) -> Path:
        """The server."""
        return self.bindir / "postgres"

    @property
    def initdb(self) -> Path:
        """Creates a cluster."""
        return self.bindir / "initdb"

    @property
    def pg_isready(self) -> Path:
        """Readiness probe."""
        return self.bindir / "pg_isready"

    @property
    def psql(self) -> Path:
        """The SQL shell, used to create the dev role and database."""
        return self.bindir / "psql"

    def run_as(self) -> dict[str, Any]:
        """subprocess keyword arguments that run a server program as its proper user."""
        env = {**os.environ, "LC_ALL": "C"}
        if os.geteuid() != 0:
            return {"env": env}
        user = system_user()
        # setuid in the child itself (not runuser, which would stay in between as the
        # parent), so the pid we hold is the postmaster's and signals reach it directly.
        return {
            "env": env,
            "user": user.pw_uid,
            "group": user.pw_gid,
            "extra_groups": [],
            "cwd": "/",
        }


def system_user() -> pwd.struct_passwd:
    """The postgres system user, which root runs the server as."""
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise ServiceError(
            f"running as root needs the '{SYSTEM_USER}' system user (PostgreSQL refuses "
            "to run as root); run `make sysdeps`"
        ) from None


def _traversable(directory: Path, user: pwd.struct_passwd) -> bool:
    """Whether user can reach entries inside directory (search permission on each level)."""
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    for level in [directory, *directory.parents]:
        info = level.stat()
        if info.st_uid == user.pw_uid:
            needed = stat.S_IXUSR
        elif info.st_gid in groups:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not info.st_mode & needed:
            return False
    return True


def prepare_data_dir(data_dir: Path) -> Path:
    """Create the cluster folder if needed, owned by the server's user; return where it is."""
    if os.geteuid() != 0:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return data_dir
    user = system_user()
    if data_dir.is_symlink():
        cluster = data_dir.readlink()
    else:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        if _traversable(data_dir.parent, user):
            cluster = data_dir
        elif data_dir.exists() and any(data_dir.iterdir()):
            raise ServiceError(
                f"the '{SYSTEM_USER}' user cannot reach {data_dir}: give every folder above "
                "it search permission (chmod o+x), or remove it to start afresh"
            )
        else:
            # Typically a checkout under /root (mode 0700): keep the cluster where the
            # postgres user can reach it, and leave a symlink where it was asked for.
            digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
            cluster = FALLBACK_ROOT / digest
            FALLBACK_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
            FALLBACK_ROOT.chmod(0o755)
            if data_dir.exists():
                data_dir.rmdir()
            data_dir.symlink_to(cluster, target_is_directory=True)
    cluster.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(cluster, user.pw_uid, user.pw_gid)
    cluster.chmod(0o700)
    return cluster


def remove_data_dir(data_dir: Path) -> None:
    """Delete a cluster's files, following the fallback symlink if there is one."""
    if data_dir.is_symlink():
        shutil.rmtree(data_dir.readlink(), ignore_errors=True)
        data_dir.unlink()
    elif data_dir.exists():
        shutil.rmtree(data_dir)


def socket_dir_for(cluster_dir: Path, port: int) -> str:
    """The cluster folder as the Unix socket folder, or '' (TCP only) when the path is too long."""
    if len(f"{cluster_dir}/.s.PGSQL.{port}") > _SOCKET_PATH_MAX:
        return ""
    return str(cluster_dir)
