#!/usr/bin/env bash
# Runs the image's roles against a real Redis and PostgreSQL and checks them:
# `migrate` applies the schema, `serve` answers /healthz and admits one
# registration, `worker store` drains it into PostgreSQL, the image's
# HEALTHCHECK (`gelombang healthcheck`) passes in both, and the door stops
# cleanly on SIGTERM.
#
#   make up DEV_ARGS=--no-apps && scripts/image-test.sh   # against the dev stack
#   IMAGE_TEST_REDIS_URL=redis://127.0.0.1:PORT/0 \
#   IMAGE_TEST_POSTGRES_DSN=postgresql://gelombang@127.0.0.1:PORT/gelombang \
#       scripts/image-test.sh                             # against other servers
#
# It touches none of the data there: the roles use Redis database 15 (flushed
# first) and a PostgreSQL database of their own, gelombang_image_test (dropped
# and created again on each run; the role must have CREATEDB, as the dev one has).
# The containers share the host's network, because the dev stack listens on
# loopback only. Run `make image` first.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/image-lib.sh
source scripts/image-lib.sh

select_engine
image_exists "$IMAGE" || { echo "no image $IMAGE: make image" >&2; exit 1; }
PYTHON=${PYTHON:-.venv/bin/python}
TEST_DB=gelombang_image_test
TEST_REDIS_DB=15
NAME=gelombang-image-test-$$
started=$SECONDS

say() { echo "image-test [$((SECONDS - started)) s]: $*"; }
fail() { echo "image-test: FAILED: $*" >&2; exit 1; }

# Retry a check until it passes or the deadline: the roles start asynchronously.
wait_for() {
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$what: not within $seconds s"
        sleep 0.5
    done
}

if [ -z "${IMAGE_TEST_REDIS_URL:-}" ] || [ -z "${IMAGE_TEST_POSTGRES_DSN:-}" ]; then
    [ -f .dev/gelombang.toml ] || fail "no dev stack config (.dev/gelombang.toml): make up"
    # The dev stack's addresses, as its own processes read them.
    read -r dev_redis dev_postgres < <(GELOMBANG_CONFIG=.dev/gelombang.toml "$PYTHON" -c \
        'from config.settings import Settings; s = Settings.load(); print(s.redis.url, s.postgres.dsn)')
    IMAGE_TEST_REDIS_URL=${IMAGE_TEST_REDIS_URL:-$dev_redis}
    IMAGE_TEST_POSTGRES_DSN=${IMAGE_TEST_POSTGRES_DSN:-$dev_postgres}
fi
[[ $IMAGE_TEST_REDIS_URL =~ ^(rediss?://[^/]+) ]] || fail "not a Redis URL: $IMAGE_TEST_REDIS_URL"
redis_url="${BASH_REMATCH[1]}/$TEST_REDIS_DB"
[[ $IMAGE_TEST_POSTGRES_DSN =~ ^(postgres(ql)?://[^/]+)/ ]] ||
    fail "not a PostgreSQL URL: $IMAGE_TEST_POSTGRES_DSN"
postgres_dsn="${BASH_REMATCH[1]}/$TEST_DB"

redis-cli -u "$redis_url" ping >/dev/null 2>&1 || fail "Redis does not answer at $redis_url (make up)"
redis-cli -u "$redis_url" flushdb >/dev/null
PGOPTIONS='-c client_min_messages=warning' psql "$IMAGE_TEST_POSTGRES_DSN" -q -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS $TEST_DB WITH (FORCE)" -c "CREATE DATABASE $TEST_DB" ||
    fail "cannot create database $TEST_DB at $IMAGE_TEST_POSTGRES_DSN (make up)"

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
public_port=$(free_port)
admin_port=$(free_port)
random_key() { "$PYTHON" -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())'; }

# The containers' whole configuration, as a deployment gives it: environment only.
# Fresh random keys and token (nothing is kept). Production mode, the image's
# default, is turned off: it refuses this test's plain-http public and NIK URLs
# and SMTP without TLS, which a loopback test against the dev stack has no way
# to offer; what production mode checks is tested in tests/config/test_secrets.py.
export GELOMBANG_SECURITY__PRODUCTION=false
export GELOMBANG_REDIS__URL=$redis_url
export GELOMBANG_POSTGRES__DSN=$postgres_dsn
export GELOMBANG_PUBLIC__PORT=$public_port
export GELOMBANG_PUBLIC__BASE_URL=http://127.0.0.1:$public_port
export GELOMBANG_ADMIN__PORT=$admin_port
GELOMBANG_ADMIN__TOKEN=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(48))')
export GELOMBANG_ADMIN__TOKEN
export GELOMBANG_KEYS__ACTIVE_SEALING_KEY_ID=it1 GELOMBANG_KEYS__ACTIVE_TOKEN_KEY_ID=it1
export GELOMBANG_KEYS__ACTIVE_ADDRESS_KEY_ID=it1
GELOMBANG_KEYS__SEALING_KEYS__IT1=$(random_key)
GELOMBANG_KEYS__HASH_KEY=$(random_key)
GELOMBANG_KEYS__TOKEN_KEYS__IT1=$(random_key)
GELOMBANG_KEYS__ADDRESS_KEYS__IT1=$(random_key)
export GELOMBANG_KEYS__SEALING_KEYS__IT1 GELOMBANG_KEYS__HASH_KEY
export GELOMBANG_KEYS__TOKEN_KEYS__IT1 GELOMBANG_KEYS__ADDRESS_KEYS__IT1
# The door's shutdown waits out its drain grace first (5 s by default).
export GELOMBANG_DOOR__DRAIN_GRACE_SECONDS=0.5
# `--env NAME` without a value passes this script's value on: the keys appear on
# no command line.
run_options=(--network host)
for variable in $(compgen -e | grep '^GELOMBANG_'); do
    run_options+=(--env "$variable")
done

# podman schedules a HEALTHCHECK's interval with systemd timers, and without
# systemd (as here) logs an error on each start and stop of a container that has
# one; healthy() runs the check instead, so those lines are only noise.
engine() {
    "$ENGINE" "$@" 2> >(grep -v 'unable to get systemd connection' >&2)
}

# Containers of a run that was killed before its cleanup (a test timeout kills
# this script, not the containers): removed when their script is gone.
for leftover in $("$ENGINE" ps --all --format '{{.Names}}' | grep '^gelombang-image-test-' || true); do
    owner=${leftover#gelombang-image-test-}
    owner=${owner%%-*}
    kill -0 "$owner" 2>/dev/null || engine rm --force --time 0 "$leftover" >/dev/null
done

containers=()
cleanup() {
    local status=$?
    for container in "${containers[@]}"; do
        if [ "$status" != 0 ]; then
            echo "--- logs of $container" >&2
            "$ENGINE" logs "$container" >&2 2>&1 | tail -40 || true
        fi
        "$ENGINE" rm -f "$container" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

# Docker's HEALTHCHECK, run now instead of on its interval: podman runs the
# image's own instruction; docker has no such command, so it runs the same one.
healthy() {
    if [ "$ENGINE" = podman ]; then
        podman healthcheck run "$1"
    else
        docker exec "$1" gelombang healthcheck
    fi
}

say "migrate ($IMAGE, $ENGINE)"
engine run --rm "${run_options[@]}" "$IMAGE" migrate || fail "migrate"
[ "$(psql "$postgres_dsn" -tAc "SELECT to_regclass('registrations') IS NOT NULL")" = t ] ||
    fail "migrate: no registrations table"

say "serve on 127.0.0.1:$public_port, worker store"
containers+=("$NAME-serve")
engine run --detach --name "$NAME-serve" "${run_options[@]}" "$IMAGE" >/dev/null
containers+=("$NAME-store")
engine run --detach --name "$NAME-store" "${run_options[@]}" "$IMAGE" worker store >/dev/null
[ "$("$ENGINE" exec "$NAME-serve" id -u)" = 10001 ] || fail "serve does not run as uid 10001"

wait_for "serve: GET /healthz" 30 curl -fsS "http://127.0.0.1:$public_port/healthz"
wait_for "serve: HEALTHCHECK" 10 healthy "$NAME-serve"
wait_for "worker store: HEALTHCHECK (drain heartbeat)" 30 healthy "$NAME-store"
say "serve and worker store healthy"

status=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$public_port/v1/registrations" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: image-test-$$" -d '{
      "nik": "3201014506990001", "full_name": "Siti Nurhaliza", "email": "siti@example.com",
      "phone": "0812-3456-7890", "birth_date": "1999-06-05", "consent": true}')
[ "$status" = 202 ] || fail "POST /v1/registrations answered $status, not 202"
stored() { [ "$(psql "$postgres_dsn" -tAc 'SELECT count(*) FROM registrations')" = 1 ]; }
wait_for "the registration stored in PostgreSQL by worker store" 30 stored
say "one registration: 202 from serve, stored by worker store"

engine stop --time 20 "$NAME-serve" >/dev/null
exit_code=$("$ENGINE" inspect --format '{{.State.ExitCode}}' "$NAME-serve")
[ "$exit_code" = 0 ] || fail "serve exited $exit_code on SIGTERM, not 0"
say "serve stopped on SIGTERM with status 0; passed"
