#!/usr/bin/env bash
# The test command: installs everything (idempotent, cached), builds, then runs unit and integration tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "$(id -u)" = 0 ]; then
  bash scripts/setup.sh
else
  echo "[test] not root: skipping set-up; integration tests will be skipped" >&2
  [ -d node_modules ] || npm ci --no-audit --no-fund
  npx tsc -p tsconfig.json
fi
echo "[test] lint"
npx eslint src test bench
echo "[test] unit tests"
node --test --test-reporter=spec dist/test/unit/
echo "[test] integration tests"
node --test --test-concurrency=1 --test-timeout=600000 --test-reporter=spec dist/test/integration/
if [ -d dist/test/security ]; then
  echo "[test] escape suite (attacks from inside a sandbox and from API clients)"
  node --test --test-concurrency=1 --test-timeout=600000 --test-reporter=spec dist/test/security/
fi
