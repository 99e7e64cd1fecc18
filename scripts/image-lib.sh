# Shared by scripts/build-image.sh and scripts/image-test.sh (sourced, not run):
# which container engine, the image names, and the build context's hash.
# Expects to be sourced from the repository root with `set -euo pipefail` on.

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
# Local names only: nothing is pulled from or pushed to a registry.
IMAGE=${IMAGE:-localhost/gelombang:$VERSION}
BASE_IMAGE=${BASE_IMAGE:-localhost/gelombang-base:bookworm}
# The label that records which sources an image was built from (see context_hash).
CONTEXT_LABEL=org.gelombang.context-sha256
IMAGE_STATE=.dev/image

# podman where installed (`make sysdeps`), else docker; ENGINE=docker to choose.
select_engine() {
    if [ -z "${ENGINE:-}" ]; then
        if command -v podman >/dev/null 2>&1; then
            ENGINE=podman
        elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
            ENGINE=docker
        else
            echo "no container engine: install podman (make sysdeps) or run a Docker engine" >&2
            return 1
        fi
    fi
    if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ]; then
        podman_conf
    fi
}

# The highest limits a container may be given here: runc cannot set a limit above
# its parent's hard limit (EPERM). conmon, runc's parent, runs with at most
# kernel.pid_max processes (seen: 32768, while the shell's hard limit was 96367).
NOFILE_LIMIT=$(ulimit -Hn)
NPROC_LIMIT=$(ulimit -Hu)
PID_MAX=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo "$NPROC_LIMIT")
[ "$NPROC_LIMIT" = unlimited ] || [ "$NPROC_LIMIT" -gt "$PID_MAX" ] && NPROC_LIMIT=$PID_MAX
[ "$NOFILE_LIMIT" = unlimited ] && NOFILE_LIMIT=1048576

# podman's defaults do not start a container in this sandbox: its default ulimits
# (nofile 1048576) are above the limits above, and its default runtime (crun) is
# not installed. CONTAINERS_CONF makes podman read this file instead of the
# system's, for these scripts' commands only; written on each run because the
# limits are those of the machine it runs on.
podman_conf() {
    mkdir -p "$IMAGE_STATE"
    cat > "$IMAGE_STATE/containers.conf" <<EOF
# Written by scripts/image-lib.sh; export CONTAINERS_CONF=\$PWD/$IMAGE_STATE/containers.conf
# to run podman by hand on this machine with the same settings.
[containers]
default_ulimits = ["nofile=$NOFILE_LIMIT:$NOFILE_LIMIT", "nproc=$NPROC_LIMIT:$NPROC_LIMIT"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
    export CONTAINERS_CONF="$PWD/$IMAGE_STATE/containers.conf"
}

image_exists() {
    "$ENGINE" image inspect "$1" >/dev/null 2>&1
}

# sha256 of every file the build reads: the Dockerfile, .dockerignore and what
# .dockerignore lets into the context (the same paths, the same exclusions). An
# image labelled with the current hash was built from the sources as they are now.
context_hash() {
    local allowed
    allowed=$(sed -n 's:^!\(.*\)$:\1:p' .dockerignore | sed 's:/$::')
    {
        printf '%s\n' Dockerfile .dockerignore
        # shellcheck disable=SC2086  # one path per word
        find $allowed -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
            ! -path 'benchmarks/results/*'
    } | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1
}
