#!/usr/bin/env bash
# deploy/test.sh: the one command that runs all tests.
#   brings up the loopback test stack without the bridge (deploy/stack.sh up --no-bridge),
#   exports its env (COI_TEST_STACK=1, COI_TEST_PG_URL, ...; see `stack.sh env`), then runs
#   cargo test --workspace --lib --bins --tests [extra cargo test args...] (benches: compiled only)
# Integration tests serialize themselves; no global --test-threads=1.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/coi-target}"
command -v cargo >/dev/null || { [ -f "${HOME:-/root}/.cargo/env" ] && . "${HOME:-/root}/.cargo/env"; }

bash "$SCRIPT_DIR/stack.sh" up --no-bridge
eval "$(bash "$SCRIPT_DIR/stack.sh" env)"

cd "$REPO_DIR"
# one deploy/test.sh at a time per stack: concurrent runs (e.g. two checkouts) would share the
# bridge mailbox. Tests themselves can flock $COI_TEST_LOCK to serialise across processes.
exec 8>"$COI_STACK_DIR/test-run.lock"
if ! flock -n 8; then
    echo "[test] waiting for another deploy/test.sh run on this stack to finish" >&2
    flock -w 3600 8 || { echo "[test] gave up waiting for $COI_STACK_DIR/test-run.lock" >&2; exit 1; }
fi
# Benchmarks are compiled (so they cannot rot) but not run here: they only print figures (BENCHMARKS.md).
echo "[test] cargo test --workspace --all-targets --no-run (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
cargo test --workspace --all-targets --no-run 8>&-
echo "[test] cargo test --workspace --lib --bins --tests $*" >&2
# 8>&-: the lock stays with this shell only (a daemon a test restarts must not inherit it)
cargo test --workspace --lib --bins --tests "$@" 8>&-
