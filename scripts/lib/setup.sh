# Shared set-up for scripts/test and scripts/demo: system packages, the venv,
# and a throwaway PostgreSQL cluster. Sourced, not run.

VENV="${FLEETWAVE_VENV:-$ROOT/.venv}"

fw_have() { command -v "$1" >/dev/null 2>&1; }

# Installs Debian packages that are missing, when we may (root and apt-get).
fw_install_system_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && fw_have apt-get; then
    echo "== installing ${missing[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    # The Debian packages start system services we do not use; tests start their own.
    for svc in mosquitto postgresql prometheus; do
      if fw_have systemctl; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
      if fw_have service; then service "$svc" stop >/dev/null 2>&1 || true; fi
    done
  else
    echo "missing system packages: ${missing[*]} (install them, or run as root)" >&2
    return 1
  fi
}

fw_install_venv() {
  local py="${PYTHON:-python3}"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV" >&2
    "$py" -m venv "$VENV"
  fi
  local stamp="$VENV/.fleetwave-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "== installing fleetwave and its dev dependencies" >&2
    "$VENV/bin/pip" install -q --upgrade pip >&2
    "$VENV/bin/pip" install -q -e ".[dev]" >&2
    touch "$stamp"
  fi
}

fw_pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  fw_have initdb && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

# Starts a private PostgreSQL cluster in $1 on a free port and exports
# FLEETWAVE_TEST_POSTGRES_URL. As root, the cluster runs as the postgres user.
fw_start_postgres() {
  local dir="$1" bindir port as=()
  bindir="$(fw_pg_bindir)" || { echo "PostgreSQL server binaries not found" >&2; return 1; }
  port="$("${PYTHON:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$dir"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bindir/initdb" -D "$dir/data" -A trust -U fleetwave --no-sync >/dev/null
  "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
  "${as[@]}" "$bindir/createdb" -h 127.0.0.1 -p "$port" -U fleetwave fleetwave
  export FLEETWAVE_TEST_POSTGRES_URL="postgresql://fleetwave@127.0.0.1:$port/fleetwave"
  echo "== PostgreSQL on port $port" >&2
}

fw_stop_postgres() {
  local dir="$1" bindir as=()
  [ -d "$dir/data" ] || { rm -rf "$dir"; return 0; }
  bindir="$(fw_pg_bindir)" || return 0
  [ "$(id -u)" -eq 0 ] && as=(runuser -u postgres --)
  "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
