# syntax=docker/dockerfile:1
# One image for every Gelombang role: the entrypoint is `gelombang`, the command
# the role (serve, worker store|email|nik, migrate, mail-sink, nik-sim, ...).
#   docker build -t gelombang .
#   docker run gelombang serve          # the default command
#   docker run gelombang worker store
# See docs/deployment.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: wheels for the project and every dependency ---------------------
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
# LICENSE: pyproject.toml names it as the wheel's license file; the build fails without it.
COPY pyproject.toml README.md LICENSE ./
COPY gelombang ./gelombang
COPY intake ./intake
COPY queueing ./queueing
COPY database ./database
COPY workers ./workers
COPY config ./config
COPY loadtest ./loadtest
COPY benchmarks ./benchmarks
# Every dependency has a wheel for amd64 and arm64 today, so a compiler is
# installed only when pip finds one without (a new platform, a new release):
# build-essential alone takes longer than the rest of the build. The runtime
# stage copies wheels, never this toolchain. The cache mount keeps downloads
# between builds on one machine and out of every layer.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels . \
    || { apt-get update \
         && apt-get install -y --no-install-recommends build-essential \
         && rm -rf /var/lib/apt/lists/* \
         && pip wheel --wheel-dir /wheels . ; }

# --- runtime: the wheels installed into a slim Python, run as a plain user ----
FROM ${PYTHON_IMAGE} AS runtime
# GELOMBANG_SECURITY__PRODUCTION: an image is for deployments, so it refuses plain
# HTTP/SMTP links and public dev-only secrets unless told otherwise (compose.yaml).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GELOMBANG_SECURITY__PRODUCTION=true \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it. The mail
# sink's folder exists in the image, owned by that user, so a volume mounted
# there starts with that owner (else root's, and unwritable).
RUN groupadd --system --gid 10001 gelombang \
    && useradd --system --uid 10001 --gid gelombang --home-dir /var/lib/gelombang \
       --create-home --shell /usr/sbin/nologin gelombang \
    && install -d -o gelombang -g gelombang /var/lib/gelombang/mail
# The wheels are bind-mounted from the builder, so no layer keeps a copy.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels gelombang
WORKDIR /var/lib/gelombang
USER 10001:10001
# Public API; admin port (/metrics, admin API; bind it with GELOMBANG_ADMIN__HOST).
EXPOSE 8080 8081
# Role-aware: `gelombang healthcheck` reads the role from PID 1's command line
# (serve: GET /healthz; worker store: its drain heartbeat; worker email|nik:
# Redis answers; mail-sink, nik-sim: their port answers; one-shot commands: 0).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["gelombang", "healthcheck"]
ENTRYPOINT ["gelombang"]
CMD ["serve"]
