#!/usr/bin/env bash
# Prints a Postgres URL for DecentraSpace, making sure the server answers and the database exists:
#   1. $DATABASE_URL when set (used as is);
#   2. else the server on 127.0.0.1:$PG_PORT (default 5432) when one answers;
#   3. else a private cluster under .data/postgres on 127.0.0.1:$PRIVATE_PG_PORT (default 54329),
#      created and started on first use.
# The URL goes to stdout, progress to stderr, so callers can `export DATABASE_URL=$(scripts/postgres.sh)`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
db_name=${PG_DATABASE:-decentraspace}
port=${PG_PORT:-5432}
private_port=${PRIVATE_PG_PORT:-54329}

log() { printf 'postgres: %s\n' "$*" >&2; }

if [ -n "${DATABASE_URL:-}" ]; then
  echo "$DATABASE_URL"
  exit 0
fi

# Debian keeps the server binaries in a versioned folder outside PATH.
pg_bin() {
  local tool=$1 found
  if found=$(command -v "$tool" 2>/dev/null); then echo "$found"; return; fi
  for found in /usr/lib/postgresql/*/bin/"$tool"; do
    if [ -x "$found" ]; then echo "$found"; return; fi
  done
  log "cannot find $tool: install PostgreSQL (Debian: apt-get install postgresql) or set DATABASE_URL"
  exit 1
}

ensure_database() {
  local host=$1 port=$2
  if ! psql -h "$host" -p "$port" -U postgres -d postgres -Atqc \
      "select 1 from pg_database where datname = '$db_name'" | grep -q 1; then
    log "creating database $db_name"
    psql -h "$host" -p "$port" -U postgres -d postgres -qc "create database \"$db_name\"" >&2
  fi
  echo "postgres://postgres@$host:$port/$db_name"
}

if "$(pg_bin pg_isready)" -h 127.0.0.1 -p "$port" -q; then
  ensure_database 127.0.0.1 "$port"
  exit 0
fi

data="$root/.data/postgres"
socket_dir="$root/.data/postgres-socket"
run_as=()
# Postgres refuses to run as root: run the private cluster as the postgres user then.
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  run_as=(runuser -u postgres --)
fi

if [ ! -s "$data/PG_VERSION" ]; then
  log "initialising a private cluster in $data"
  mkdir -p "$data" "$socket_dir"
  [ ${#run_as[@]} -eq 0 ] || chown postgres "$data" "$socket_dir"
  "${run_as[@]}" "$(pg_bin initdb)" -D "$data" -U postgres --auth=trust >/dev/null
fi
if ! "$(pg_bin pg_isready)" -h 127.0.0.1 -p "$private_port" -q; then
  log "starting the private cluster on 127.0.0.1:$private_port"
  mkdir -p "$socket_dir"
  [ ${#run_as[@]} -eq 0 ] || chown postgres "$socket_dir"
  "${run_as[@]}" "$(pg_bin pg_ctl)" -D "$data" -l "$data/server.log" -w \
    -o "-p $private_port -k $socket_dir -c listen_addresses=127.0.0.1" start >/dev/null
fi
ensure_database 127.0.0.1 "$private_port"
