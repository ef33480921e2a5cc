# Shared by scripts/demo and scripts/test: a virtual environment and a Redis that answers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${MTDESK_VENV:-.venv}

ensure_venv() {  # $1: pip extras, e.g. "[test]"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
  fi
  "$VENV/bin/pip" install -q -e ".$1"
}

ensure_redis_installed() {
  command -v redis-server >/dev/null 2>&1 && return 0
  echo "installing redis-server (Debian package)…"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server >/dev/null
}

ensure_chromium() {  # for the admin console's browser tests; they are skipped without it
  [ -x /usr/bin/chromium ] && return 0
  echo "installing chromium (Debian package) for the browser tests…"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null; }; then
    echo "chromium could not be installed: the browser tests will be skipped" >&2
  fi
  return 0
}

ensure_redis() {  # a Redis answering on 127.0.0.1:6379 (the tests' default)
  if command -v redis-cli >/dev/null 2>&1 && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    return 0
  fi
  ensure_redis_installed
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "Redis did not start on 127.0.0.1:6379" >&2
  return 1
}
