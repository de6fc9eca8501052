#!/usr/bin/env bash
# The fuzz campaign: each cargo-fuzz target of fuzz/ for FUZZ_SECONDS (default 60), with
# libFuzzer, on the nightly toolchain (rustup's) and cargo-fuzz (installed from crates.io when
# missing). New inputs that reach new code are kept in fuzz/corpus/<target>, minimised; a crash
# is left in fuzz/artifacts/<target> and fails the run: once fixed, copy it to
# fuzz/regressions/<target>, where the test suite replays it for ever.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-60}
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd fuzz
for target in ${FUZZ_TARGETS:-gateway event config}; do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${seconds}s"
  log=$(mktemp)
  if ! cargo +nightly fuzz run -O "$target" "corpus/$target" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target found a crash (fuzz/fuzz/artifacts/$target)" >&2
    exit 1
  fi
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|stat::peak_rss_mb)" "$log" || true
  rm -f "$log"
  cargo +nightly fuzz cmin -O "$target" "corpus/$target" >/dev/null 2>&1
done
