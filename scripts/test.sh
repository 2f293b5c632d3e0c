#!/usr/bin/env bash
# The project's test command: install the development dependencies, then run the
# test suite, ruff and mypy. Run it from anywhere: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python -m pip install -e '.[dev]'
# the Redis backends (redis-lists, redis-streams), their test extras (fakeredis) and hiredis,
# the C reply parser and command packer redis-py uses when it is installed (benchmarks use it)
python -m pip install -e './backends/redis[test,hiredis]'
# the HTTP gateway plugin (jobchain-http) and its test extras (schemathesis)
python -m pip install -e './plugins/http[test]'
# the SQLite backend (jobchain-sqlite): the standard library's sqlite3, no new dependency
python -m pip install -e './plugins/sqlite[test]'
# the web dashboard (jobchain-dashboard), its /metrics (prometheus_client) and its browser tests (selenium)
python -m pip install -e './plugins/dashboard[test,metrics]'

# The Redis backends' tests need a real server, the dashboard's browser tests Chromium and its
# driver: install Debian's packages when they are missing.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "${missing[*]} missing and installing needs root (or sudo)" >&2
            exit 1
        fi
        as_root=(sudo)
    fi
    ${as_root[@]+"${as_root[@]}"} apt-get update
    ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
fi

# every core: one pytest worker per core, each test file kept on one worker (its servers started once)
python -m pytest -q -n auto --dist loadfile
ruff check .
mypy
mypy --strict backends/redis/jobchain_redis
mypy --strict plugins/http/jobchain_http
mypy --strict plugins/sqlite/jobchain_sqlite
mypy --strict plugins/dashboard/jobchain_dashboard
