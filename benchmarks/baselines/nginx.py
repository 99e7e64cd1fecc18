"""The machine's HTTP ceiling: Debian's nginx answering 202 to every POST, nothing else.

Labelled baseline: one worker process, no access log, `return 202` with a
body of the door's size; it reads (and discards) the request body. What no
Python server on the same core can beat.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

NGINX = "/usr/sbin/nginx"

BODY = '{"registration_id":"01890000-0000-7000-8000-000000000000","status":"queued"}'


def binary() -> str | None:
    """nginx's path (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    return shutil.which("nginx") or (NGINX if os.access(NGINX, os.X_OK) else None)


def write_config(folder: Path, port: int) -> Path:
    """An nginx.conf whose every path (pid, logs, temp files) lies in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    # As root the master hands its worker to `user` (default nobody, who cannot
    # reach a 0700 scratch folder); as anyone else nginx ignores the directive.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(f"    {kind}_temp_path {folder / (kind + '_temp')};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = f"""{user}daemon off;
worker_processes 1;
pid {folder / 'nginx.pid'};
error_log {folder / 'nginx-error.log'} warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
{temp}
    default_type application/json;
    # aiohttp and uvicorn keep a connection open for any number of requests;
    # nginx's default (1,000) would make wrk reconnect and cost it a little.
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location = /v1/registrations {{
            return 202 '{BODY}';
        }}
    }}
}}
"""
    path = folder / "nginx.conf"
    path.write_text(text)
    return path


def command(config: Path) -> list[str]:
    """The argument vector; -e keeps nginx's start-up error log out of /var/log."""
    found = binary()
    if found is None:
        raise RuntimeError("nginx not found: `make sysdeps` installs Debian's nginx-light")
    return [found, "-c", str(config), "-p", str(config.parent),
            "-e", str(config.parent / "nginx-error.log")]
