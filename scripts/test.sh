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

# The Redis backends' tests need a real server; install Debian's when it is missing.
if ! command -v redis-server >/dev/null 2>&1; then
    as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "redis-server is missing and installing it needs root (or sudo)" >&2
            exit 1
        fi
        as_root=(sudo)
    fi
    ${as_root[@]+"${as_root[@]}"} apt-get update
    ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends redis-server
fi

# every core: one pytest worker per core, each test file kept on one worker (its servers started once)
python -m pytest -q -n auto --dist loadfile
ruff check .
mypy
mypy --strict backends/redis/jobchain_redis
mypy --strict plugins/http/jobchain_http
mypy --strict plugins/sqlite/jobchain_sqlite
