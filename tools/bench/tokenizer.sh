#!/usr/bin/env bash
# The tokenizer benchmark: titan.cpp against the npm package's JavaScript encoder on the
# SOTU corpus, one core each, in one run (tools/bench/tokenizer.cpp says what it prints).
#   tools/bench/tokenizer.sh [bench_tokenizer options, e.g. --passes 5]
# Environment: TITAN_BUILD_DIR (default build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
build=${TITAN_BUILD_DIR:-build}
ninja -C "$build" bench_tokenizer titan-data >/dev/null
tools/fetch_assets.sh >/dev/null
echo "bench_tokenizer: $(lscpu | sed -n 's/^Model name: *//p'), node $(node --version)"
exec "$build/tools/bench/bench_tokenizer" "$@"
