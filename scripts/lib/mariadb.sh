# shellcheck shell=bash
# A private MariaDB for scripts/demo, scripts/cluster-demo and scripts/callgrind-broker: its own
# data directory and socket, no TCP port (--skip-networking), run as the calling user, never the
# system's server. Sourced (from the repository's root), not run:
#
#   . scripts/lib/mariadb.sh
#   mariadb_start "$run" "$datadir" "$socket" "demo: creating a private MariaDB in $datadir"
#   trap 'mariadb_stop' EXIT      # the caller's own cleanup, which calls mariadb_stop
#   mariadb_wait                  # until it answers on the socket
#   mariadb_load_schema           # database chat with mosquitto-conf/schema.sql
#   sql chat -e '...'             # the mariadb client as root on the socket
#
# The install log, the error log and the pid file are $run/install.log, $run/mariadb.err and
# $run/mariadb.pid.

# mariadb_start RUN DATADIR SOCKET [MESSAGE]: creates the data directory when DATADIR/mysql
# is missing (saying MESSAGE first, when given) and starts mariadbd in the background; sets
# mariadb_pid, mariadb_run and mariadb_socket.
mariadb_start() {
  mariadb_run=$1
  local datadir=$2
  mariadb_socket=$3
  local message=${4:-}
  if [ ! -d "$datadir/mysql" ]; then
    [ -n "$message" ] && echo "$message"
    mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$datadir" \
      --auth-root-authentication-method=normal >"$mariadb_run/install.log" 2>&1
  fi
  mariadbd --no-defaults --user="$(id -un)" --datadir="$datadir" --socket="$mariadb_socket" \
    --skip-networking --log-error="$mariadb_run/mariadb.err" --pid-file="$mariadb_run/mariadb.pid" &
  mariadb_pid=$!
}

# sql ARGS...: the mariadb client as root on the private socket.
sql() { mariadb --no-defaults --socket="$mariadb_socket" -uroot "$@"; }

# mariadb_wait: until the server answers (10 s at most); when mariadbd has died, prints its
# error log and exits 1.
mariadb_wait() {
  for _ in $(seq 1 100); do
    sql -e 'SELECT 1' >/dev/null 2>&1 && break
    kill -0 "$mariadb_pid" 2>/dev/null || { cat "$mariadb_run/mariadb.err" >&2; exit 1; }
    sleep 0.1
  done
}

# mariadb_load_schema: the database chat, with the bundled schema (safe on an existing one).
mariadb_load_schema() {
  sql -e "CREATE DATABASE IF NOT EXISTS chat"
  sql chat <mosquitto-conf/schema.sql
}

# mariadb_stop: stops mariadbd and waits for it (nothing when it is not running).
mariadb_stop() {
  kill "$mariadb_pid" 2>/dev/null && wait "$mariadb_pid" 2>/dev/null || true
}
