#!/usr/bin/env bash
# Team MLflow tracking server: `mlflow server` over a PostgreSQL backend, both on 127.0.0.1.
#
# Why PostgreSQL: sqlite serialises writers, so many sweep jobs writing through one server
# (or straight into one file over NFS) queue up or fail with "database is locked".
#
#   scripts/pg_server.sh start    # install PostgreSQL if missing, start cluster + mlflow server
#   scripts/pg_server.sh stop     # stop both (the cluster only if this script owns it)
#   scripts/pg_server.sh status
#   scripts/pg_server.sh uri      # the MLFLOW_TRACKING_URI to hand to jobs
#
# Settings (environment; `make server` passes its variables of the same names):
#   SERVER_PORT=5001        mlflow server port
#   SERVER_HOST=127.0.0.1   mlflow server interface. It has no authentication: keep 127.0.0.1 and let
#                           teammates in with `ssh -L 5001:127.0.0.1:5001 HOST`
#   PG_PORT=5433            port of the private PostgreSQL cluster (127.0.0.1 only)
#   DB_URI=                 an existing PostgreSQL (postgresql://USER@HOST:PORT/DB): no private cluster is
#                           made. Keep the password out of the URI (it shows in `ps`): put it in ~/.pgpass
#                           or a file named by PGPASSFILE (format HOST:PORT:DB:USER:PASSWORD, mode 600)
#   SERVER_DIR=<repo>/.server   state: pgdata/ (cluster), artifacts/, log/, pgpass, mlflow-PORT.pid
#   ARTIFACTS=$SERVER_DIR/artifacts   where the server keeps artifacts (clients upload through it)
#   WORKERS=2               mlflow server worker processes
#   VENV=<repo>/.venv       where `mlflow` and psycopg2 are installed
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVER_PORT="${SERVER_PORT:-5001}"
SERVER_HOST="${SERVER_HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5433}"
DB_URI="${DB_URI:-}"
SERVER_DIR="$(mkdir -p "${SERVER_DIR:-$REPO/.server}" && cd "${SERVER_DIR:-$REPO/.server}" && pwd)"
ARTIFACTS="${ARTIFACTS:-$SERVER_DIR/artifacts}"
WORKERS="${WORKERS:-2}"
VENV="${VENV:-$REPO/.venv}"
[ -f "$SERVER_DIR/.gitignore" ] || echo '*' >"$SERVER_DIR/.gitignore"  # server state is never committed
PGD="$SERVER_DIR/pgdata"
LOGS="$SERVER_DIR/log"
PIDFILE="$SERVER_DIR/mlflow-$SERVER_PORT.pid"  # one per port: several servers may share a cluster
PGPASS="$SERVER_DIR/pgpass"
DB_NAME=mlflow
DB_USER=mlflow

say() { echo "[pg_server] $*" >&2; }
die() { say "error: $*"; exit 1; }

# PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {
    local bin
    bin="$(printf "%s\n" /usr/lib/postgresql/*/bin | grep -v "\*" | sort -V | tail -n 1)"
    if [ -z "$bin" ] && command -v pg_config >/dev/null; then bin="$(pg_config --bindir)"; fi
    echo "$bin"
}

install_postgres() {
    [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] && return 0
    say "PostgreSQL not found: installing Debian's postgresql package"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q postgresql
    [ -x "$(pg_bin)/initdb" ] || die "initdb still missing after installing postgresql"
}

pg_running() { [ -f "$PGD/PG_VERSION" ] && as_pg "$(pg_bin)/pg_ctl" -D "$PGD" status >/dev/null 2>&1; }

psql_admin() {  # superuser over the cluster's private unix socket (peer auth)
    as_pg "$(pg_bin)/psql" -h "$PGD" -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -qtA "$@"
}

init_cluster() {
    [ -f "$PGD/PG_VERSION" ] && return 0
    if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$SERVER_DIR"; then
        die "the postgres user cannot reach $SERVER_DIR (a parent folder is private): pick another SERVER_DIR"
    fi
    say "initialising a private PostgreSQL cluster in $PGD"
    mkdir -p "$PGD" "$LOGS"
    [ "$(id -u)" = 0 ] && chown postgres: "$PGD" "$LOGS"
    chmod 700 "$PGD"
    # local (socket) connections: peer auth; TCP: password (scram) only
    as_pg "$(pg_bin)/initdb" -D "$PGD" --auth-local=peer --auth-host=scram-sha-256 -E UTF8 >/dev/null
    cat >>"$PGD/postgresql.conf" <<EOF
# losslab: loopback only, socket inside the private data dir
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PGD'
port = $PG_PORT
EOF
}

start_cluster() {
    if pg_running; then
        say "PostgreSQL already running ($PGD)"
    else
        mkdir -p "$LOGS"
        [ "$(id -u)" = 0 ] && chown postgres: "$LOGS"
        as_pg "$(pg_bin)/pg_ctl" -D "$PGD" -l "$LOGS/postgres.log" -o "-p $PG_PORT" -w -t 60 start >/dev/null \
            || { tail -n 20 "$LOGS/postgres.log" >&2; die "PostgreSQL did not start"; }
        say "PostgreSQL listening on 127.0.0.1:$PG_PORT"
    fi
    # the database and its owner; the password lives only in the private pgpass file
    if [ ! -s "$PGPASS" ]; then
        (umask 077 && echo "*:*:$DB_NAME:$DB_USER:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$PGPASS")
    fi
    local pw
    pw="$(cut -d: -f5 "$PGPASS")"
    if [ -z "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" ]; then
        psql_admin -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$pw'"
    fi
    if [ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]; then
        psql_admin -c "CREATE DATABASE $DB_NAME OWNER $DB_USER"
    fi
}

mlflow_pid() {  # pid of our running mlflow server, or nothing
    [ -f "$PIDFILE" ] || return 0
    local pid
    pid="$(cat "$PIDFILE")"
    if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

port_open() {  # is something listening on 127.0.0.1:$1
    "$VENV/bin/python" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2)" "$1" \
        2>/dev/null
}

healthy() {
    "$VENV/bin/python" - "http://127.0.0.1:$SERVER_PORT/health" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
EOF
}

start() {
    [ -x "$VENV/bin/mlflow" ] || die "$VENV/bin/mlflow not found: run \`make install\` first"
    "$VENV/bin/python" -c "import psycopg2" 2>/dev/null \
        || die "psycopg2 missing: install the server extra (\`make server\` does: pip install -e '.[server]')"
    if [ -n "$(mlflow_pid)" ]; then
        say "mlflow server already running (pid $(mlflow_pid)): $(uri)"
        return 0
    fi
    local backend passfile="${PGPASSFILE:-}"  # an existing server: libpq's own ~/.pgpass unless PGPASSFILE
    if [ -n "$DB_URI" ]; then
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the server extra installs psycopg2
        backend="$(echo "$DB_URI" | sed -E 's#^postgres(ql)?://#postgresql+psycopg2://#')"
        say "using the existing PostgreSQL given by DB_URI"
    else
        install_postgres
        if ! pg_running && port_open "$PG_PORT"; then
            die "127.0.0.1:$PG_PORT is taken by another program: pick PG_PORT=..."
        fi
        init_cluster
        start_cluster
        backend="postgresql+psycopg2://$DB_USER@127.0.0.1:$PG_PORT/$DB_NAME"
        passfile="$PGPASS"
    fi
    port_open "$SERVER_PORT" && die "127.0.0.1:$SERVER_PORT is taken by another program: pick SERVER_PORT=..."
    mkdir -p "$ARTIFACTS" "$LOGS"
    # setsid: the server and its workers form one process group, stopped together.
    # MLflow's GenAI job runner (8 huey processes) is of no use to LossLab: off unless asked for.
    env ${passfile:+"PGPASSFILE=$passfile"} \
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
        setsid "$VENV/bin/mlflow" server \
        --backend-store-uri "$backend" \
        --artifacts-destination "$ARTIFACTS" --serve-artifacts \
        --host "$SERVER_HOST" --port "$SERVER_PORT" --workers "$WORKERS" \
        >"$LOGS/mlflow-$SERVER_PORT.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    say "mlflow server starting (pid $!, log $LOGS/mlflow-$SERVER_PORT.log); the first start creates the schema"
    for _ in $(seq 1 240); do
        if healthy; then
            say "ready: export MLFLOW_TRACKING_URI=$(uri)"
            return 0
        fi
        [ -n "$(mlflow_pid)" ] || { tail -n 30 "$LOGS/mlflow-$SERVER_PORT.log" >&2; die "mlflow server exited"; }
        sleep 0.5
    done
    tail -n 30 "$LOGS/mlflow-$SERVER_PORT.log" >&2
    die "mlflow server not healthy after 120 s"
}

stop() {
    local pid
    pid="$(mlflow_pid)"
    if [ -n "$pid" ]; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        say "mlflow server stopped"
    fi
    rm -f "$PIDFILE"
    local other
    for other in "$SERVER_DIR"/mlflow-*.pid; do
        if [ -f "$other" ] && kill -0 "$(cat "$other")" 2>/dev/null; then
            say "PostgreSQL left running: the server of $(basename "$other") still uses it"
            return 0
        fi
    done
    if [ -z "$DB_URI" ] && [ -n "$(pg_bin)" ] && pg_running; then
        as_pg "$(pg_bin)/pg_ctl" -D "$PGD" -m fast -w stop >/dev/null
        say "PostgreSQL stopped"
    fi
}

uri() { echo "http://127.0.0.1:$SERVER_PORT"; }

status() {
    local pid
    pid="$(mlflow_pid)"
    if [ -n "$pid" ]; then echo "mlflow server: running (pid $pid) at $(uri)"; else echo "mlflow server: stopped"; fi
    if [ -n "$DB_URI" ]; then
        echo "PostgreSQL: external (DB_URI)"
    elif [ -n "$(pg_bin)" ] && pg_running; then
        echo "PostgreSQL: running on 127.0.0.1:$PG_PORT ($PGD)"
    else
        echo "PostgreSQL: stopped"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    uri) uri ;;
    *) echo "usage: $0 start|stop|status|uri" >&2; exit 2 ;;
esac
