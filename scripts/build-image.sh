#!/usr/bin/env bash
# Builds the container image from the unchanged Dockerfile without a container
# registry: its base (PYTHON_IMAGE) is a Debian bookworm root filesystem made here
# by mmdebstrap from Debian's packages and imported into podman (or docker).
#
#   scripts/build-image.sh                 # the base (once), then the image
#   scripts/build-image.sh --context-hash  # print the sources' hash
#   scripts/build-image.sh --status        # exit 0 if the image is built from these sources
#   scripts/build-image.sh --can-build     # exit 0 if an engine (and the base's tools) is here
#   REBUILD_BASE=1 scripts/build-image.sh  # make the base again (e.g. for security updates)
#
# Idempotent: the base is made only when missing, and the engine's layer cache
# skips every Dockerfile step whose inputs did not change.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/image-lib.sh
source scripts/image-lib.sh

if [ "${1:-}" = --context-hash ]; then
    context_hash
    exit 0
fi

# For tests/image_build.py: can this machine build the image at all?
if [ "${1:-}" = --can-build ]; then
    select_engine
    "$ENGINE" info >/dev/null 2>&1 || { echo "$ENGINE does not run here"; exit 1; }
    image_exists "$BASE_IMAGE" || command -v mmdebstrap >/dev/null 2>&1 || {
        echo "no $BASE_IMAGE and no mmdebstrap to make it: make sysdeps"; exit 1; }
    echo "$ENGINE can build $IMAGE"
    exit 0
fi

select_engine

# For tests/deploy/test_image.py, which runs the image only when it is current.
if [ "${1:-}" = --status ]; then
    image_exists "$IMAGE" || { echo "no image $IMAGE ($ENGINE): make image"; exit 1; }
    built_from=$("$ENGINE" image inspect --format "{{index .Labels \"$CONTEXT_LABEL\"}}" "$IMAGE")
    if [ "$built_from" != "$(context_hash)" ]; then
        echo "$IMAGE ($ENGINE) was built from other sources than these: make image"
        exit 1
    fi
    echo "$IMAGE ($ENGINE) is built from these sources"
    exit 0
fi

MIRROR=${MIRROR:-http://deb.debian.org}
SUITE=bookworm

build_base() {
    command -v mmdebstrap >/dev/null 2>&1 || {
        echo "mmdebstrap is missing: make sysdeps" >&2; exit 1; }
    echo "making $BASE_IMAGE: Debian $SUITE (minbase) with Python 3.11"
    # python:3.11-slim-bookworm stands in for this: Debian's Python 3.11 in a
    # virtual environment at /opt/python, first on PATH, so the Dockerfile's
    # `pip install` and the `gelombang` entry point work as they do there (Debian's
    # own interpreter refuses pip installs outside a venv: PEP 668).
    # Documentation, manuals and translations are left out, as in the slim images;
    # the merged-/usr hook keeps out usrmerge and the 46 MB of Perl it pulls in.
    # Through a file, not a pipe: an import of a failed run's partial output would
    # leave a broken base that the next run takes as made.
    local rootfs="$IMAGE_STATE/base-rootfs.tar"
    mmdebstrap --variant=minbase --quiet \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --include=python3,python3-venv,ca-certificates \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='chroot "$1" python3 -m venv /opt/python' \
        "$SUITE" "$rootfs" \
        "deb $MIRROR/debian $SUITE main" \
        "deb $MIRROR/debian $SUITE-updates main" \
        "deb $MIRROR/debian-security $SUITE-security main"
    "$ENGINE" import \
        --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        "$rootfs" "$BASE_IMAGE"
    rm -f "$rootfs"
}

if [ -n "${REBUILD_BASE:-}" ] || ! image_exists "$BASE_IMAGE"; then
    build_base
else
    echo "$BASE_IMAGE exists (REBUILD_BASE=1 to make it again)"
fi

build_options=(--build-arg "PYTHON_IMAGE=$BASE_IMAGE"
               --label "$CONTEXT_LABEL=$(context_hash)" --tag "$IMAGE")
if [ "$ENGINE" = podman ]; then
    # Docker's image format: the OCI format has no HEALTHCHECK, podman would drop it.
    # Host network: the build's RUN steps reach Debian and PyPI as this machine does.
    build_options+=(--format docker --network host)
    # The RUN steps' limits: podman build does not take containers.conf's
    # default_ulimits and asks for more than this machine's hard limits allow.
    build_options+=(--ulimit "nofile=$NOFILE_LIMIT:$NOFILE_LIMIT"
                    --ulimit "nproc=$NPROC_LIMIT:$NPROC_LIMIT")
    # Where this machine reaches TLS sites through a proxy with its own CA
    # (/usr/local/share/ca-certificates), pip inside the build must trust it too:
    # the machine's bundle is mounted over the image's for the RUN steps only, so
    # no layer keeps it.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        build_options+=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
    fi
fi
echo "building $IMAGE with $ENGINE"
start=$SECONDS
"$ENGINE" build "${build_options[@]}" .
echo "built $IMAGE in $((SECONDS - start)) s; $("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE") bytes"
