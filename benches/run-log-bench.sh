#!/usr/bin/env bash
# Measures the machine's write ceiling and runs the log benchmarks, in one run, so that
# durable appends can be compared with the disk's own fdatasync bandwidth.
#   benches/run-log-bench.sh            full run
#   benches/run-log-bench.sh --quick    criterion's quick mode (a rough pass, for CI)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${SHOAL_BENCH_DIR:-$(mktemp -d)}"
export SHOAL_BENCH_DIR="$dir"
echo "machine: $(nproc) cores, $(uname -r), bench dir $dir on $(df -h "$dir" | awk 'NR==2 {print $1}')"

echo "== dd: 256 MiB sequential write + fdatasync"
dd if=/dev/zero of="$dir/dd.test" bs=1M count=256 conv=fdatasync 2>&1 | tail -n 1
echo "== dd: 2000 x 4 KiB writes, each synced (O_DSYNC)"
dd if=/dev/zero of="$dir/dd.test" bs=4k count=2000 oflag=dsync 2>&1 | tail -n 1
rm -f "$dir/dd.test"

args=()
if [[ "${1:-}" == "--quick" ]]; then args+=(--quick); fi
cargo bench -p shoal-benches --bench log -- "${args[@]}"
