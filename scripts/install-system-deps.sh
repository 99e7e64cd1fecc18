#!/usr/bin/env bash
# Installs the Debian packages the dev stack and the tests need, only when missing.
# Runs as root, or through sudo when it is available.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
# The benchmarks' HTTP ceiling (`gelombang bench door`): nginx answering a fixed 202.
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# The browser tests of the web pages drive Debian's Chromium (never a downloaded one).
[ -x /usr/bin/chromium ] || need+=(chromium)
# The container image, built and run without a Docker engine or a registry
# (`make image`, scripts/build-image.sh): podman with runc, and mmdebstrap for its base.
command -v podman >/dev/null 2>&1 || need+=(podman)
[ -x /usr/sbin/runc ] || need+=(runc)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)

[ ${#need[@]} -eq 0 ] && exit 0

echo "installing system packages: ${need[*]}"
sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install: ${need[*]}" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# policy-rc.d keeps the packages from starting their own system-wide services:
# the project runs its own instances on loopback ports.
$sudo sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
