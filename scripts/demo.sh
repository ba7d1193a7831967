#!/usr/bin/env bash
# The main job, on a fresh Debian/Ubuntu machine with Python 3.10+:
#   1. install redis-server and nginx if missing (as root; otherwise print the apt command),
#   2. create .venv and install django-arena-scale[servers] and the example project's deps,
#   3. migrate the example project,
#   4. generate its deployment configs (compose, nginx, k8s, ...) into deploy/,
#   5. serve it, load-balanced over 3 replicas with probes, on a printed URL (Ctrl-C stops all).
# Environment: PORT (default 8000), REPLICAS (default 3), ARENA_DEPLOY_DIR, ARENA_STATE_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${PORT:-8000}"
REPLICAS="${REPLICAS:-3}"
DEPLOY_DIR="${ARENA_DEPLOY_DIR:-$ROOT/deploy}"
STATE_DIR="${ARENA_STATE_DIR:-$ROOT/.state}"

say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- a Python >= 3.10 -------------------------------------------------------------------------
PYTHON=""
for candidate in "${PYTHON_BIN:-}" python3 python3.13 python3.12 python3.11 python3.10; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        PYTHON="$(command -v "$candidate")"
        break
    fi
done
[ -n "$PYTHON" ] || die "Python 3.10 or newer is required (apt-get install -y python3 python3-venv)."

# --- system packages ----------------------------------------------------------------------------
find_bin() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true; }
missing=()
[ -n "$(find_bin redis-server)" ] || missing+=(redis-server)
[ -n "$(find_bin nginx)" ] || missing+=(nginx)
if [ ! -x "$ROOT/.venv/bin/python" ] && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=("python3-venv")
fi
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        say "installing ${missing[*]} with apt-get"
        # Keep Debian from starting system nginx/redis on ports 80/6379: the demo runs its own.
        created_policy=0
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            created_policy=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
        [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    else
        echo "demo: missing system packages: ${missing[*]}. Install them with:" >&2
        echo "  sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

# --- venv and packages --------------------------------------------------------------------------
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    say "creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$ROOT/.venv"
fi
VPY="$ROOT/.venv/bin/python"
say "installing django-arena-scale[servers] and the example project's requirements"
"$VPY" -m pip install --quiet --upgrade pip
"$VPY" -m pip install --quiet "${ROOT}[servers]" -r "$ROOT/example_project/requirements.txt"

# --- example project: migrate, generate configs -------------------------------------------------
mkdir -p "$STATE_DIR"
export DJANGO_SETTINGS_MODULE=arena_project.settings
# One random SECRET_KEY for every replica, kept in the state dir so a restart keeps sessions.
if [ -z "${SECRET_KEY:-}" ]; then
    if [ ! -s "$STATE_DIR/secret_key" ]; then
        (umask 077 && "$VPY" -c 'import secrets; print(secrets.token_urlsafe(50))' >"$STATE_DIR/secret_key")
    fi
    SECRET_KEY="$(cat "$STATE_DIR/secret_key")"
fi
export SECRET_KEY
# The demo stack listens on 127.0.0.1 only: let its users inject provider faults
# (X-Arena-Simulate: fail=429 ...), as the README shows.
export ARENA_EXAMPLE_FAULT_INJECTION="${ARENA_EXAMPLE_FAULT_INJECTION:-1}"
export SQLITE_PATH="${SQLITE_PATH:-$STATE_DIR/db.sqlite3}"
export ARENA_SCALE_REPLICAS="$REPLICAS"
cd "$ROOT/example_project"
manage() { "$VPY" manage.py "$@"; }

say "migrating the example project (demo user: demo / demo-password)"
manage migrate --noinput -v 0

say "generating deployment configs into $DEPLOY_DIR"
manage generate_lb_config --output "$DEPLOY_DIR" --replicas "$REPLICAS" --force ||
    die "manage.py generate_lb_config failed (see above)."

# --- serve ----------------------------------------------------------------------------------------
# PostgreSQL when it is installed (the stack's own throwaway cluster, through PgBouncer when that
# is installed too); SQLite otherwise.
DB_ARGS=()
INITDB="$(command -v initdb 2>/dev/null || true)"
if [ -z "$INITDB" ]; then
    for candidate in /usr/lib/postgresql/*/bin/initdb; do  # the last one: the newest version
        if [ -x "$candidate" ]; then INITDB="$candidate"; fi
    done
fi
if [ -n "$INITDB" ] && "$VPY" -c 'import psycopg' 2>/dev/null; then
    INITDB="$(readlink -f "$INITDB")"  # Debian links it from its versioned bin directory
    DB_ARGS=(--postgres --pg-bin-dir "$(dirname "$INITDB")")
    if [ -n "$(find_bin pgbouncer)" ]; then DB_ARGS+=(--pgbouncer); fi
    say "database: PostgreSQL ($(dirname "$INITDB"))${DB_ARGS[3]+, through PgBouncer}"
else
    say "database: SQLite ($SQLITE_PATH); install postgresql (and pgbouncer) to run on PostgreSQL"
fi
WANTED="$PORT"
if ! "$VPY" -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$PORT" 2>/dev/null; then
    PORT="$("$VPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    say "port $WANTED is busy; using $PORT"
fi

cat <<EOT

  Open:     http://127.0.0.1:$PORT/   (the arena page: log in as demo / demo-password)
  API:      http://127.0.0.1:$PORT/api/ping/   http://127.0.0.1:$PORT/api/whoami/
  Probes:   http://127.0.0.1:$PORT/live/  /health/  /ready/  /status/
  Stream:   curl -N "http://127.0.0.1:$PORT/messages/stream/?tokens=20"
  Login:    curl -c jar -H 'Content-Type: application/json' \\
              -d '{"username":"demo","password":"demo-password"}' http://127.0.0.1:$PORT/auth/login/
  Configs:  $DEPLOY_DIR        State and logs: $STATE_DIR/stack
  Stop:     Ctrl-C

EOT
exec "$VPY" manage.py run_lb_stack --replicas "$REPLICAS" --port "$PORT" --state-dir "$STATE_DIR/stack" \
    ${DB_ARGS[@]+"${DB_ARGS[@]}"}
