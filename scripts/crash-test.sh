#!/usr/bin/env bash
# The crash test of `--data-dir` at full size: 100,000 jobs, the broker
# SIGKILLed 20 times while producers enqueue and a consumer runs them.
# Prints lost (must be 0), jobs run twice or more, and the slowest restart
# to serving. The suite runs the same test with 4,000 jobs and 5 kills.
#
#   scripts/crash-test.sh            # defaults below
#   JOBS=20000 KILLS=10 scripts/crash-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p sluice-broker
  SLUICE_CRASH_JOBS="${JOBS:-100000}" SLUICE_CRASH_KILLS="${KILLS:-20}" \
  cargo test --release -p sluice-e2e --test broker_crash -- --nocapture
