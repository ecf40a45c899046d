#!/usr/bin/env bash
# Runs the segment log benchmarks together with the machine's own write ceiling, measured by dd
# in the same run and on the same filesystem, so durable appends can be compared with it.
#
#   benches/run-log-bench.sh               full run (a few minutes)
#   benches/run-log-bench.sh --quick       criterion's quick mode: a rough pass
#   benches/run-log-bench.sh append/never  extra arguments go to criterion (here a filter)
#
# After the benches, dd writes the volume `append/always/1KiB_x500` wrote (when that case ran),
# and the two are compared like for like (see below).
#
# SHOAL_BENCH_DIR picks the directory (and so the disk) to measure; default: a new directory
# under $TMPDIR (or /tmp), which must not be a tmpfs. Needs only bash, dd and cargo.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

if [[ -n "${SHOAL_BENCH_DIR:-}" ]]; then
    dir="$SHOAL_BENCH_DIR"
    mkdir -p "$dir"
else
    dir="$(mktemp -d)"
    trap 'rm -rf "$dir"' EXIT
fi
export SHOAL_BENCH_DIR="$dir"

fs="$(df -PT "$dir" 2>/dev/null | tail -n 1 || true)"
echo "== machine: $(nproc) cores, Linux $(uname -r), $(uname -m)"
echo "== bench dir: $dir (filesystem: ${fs:-unknown})"
if [[ "$fs" == *tmpfs* ]]; then
    echo "warning: $dir is on a tmpfs; fsync costs nothing there. Set SHOAL_BENCH_DIR." >&2
fi

# Runs dd, prints its summary line, and stores "BYTES SECONDS" in the variable named first.
measure() {
    local var="$1"
    shift
    local line
    line="$(dd "$@" 2>&1 | tail -n 1)"
    echo "   $line"
    if [[ "$line" =~ ^([0-9]+)\ bytes.*copied,\ ([0-9.e+-]+)\ s ]]; then
        printf -v "$var" '%s %s' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    else
        printf -v "$var" ''
    fi
}

# "BYTES SECONDS" as MB/s (decimal, as dd prints), in bash integer arithmetic.
mb_per_s() {
    local bytes="${1%% *}" seconds="${1##* }"
    [[ "$seconds" =~ ^([0-9]+)\.?([0-9]*)$ ]] || { echo "?"; return; }
    local frac="${BASH_REMATCH[2]}000000"
    local us=$((10#${BASH_REMATCH[1]} * 1000000 + 10#${frac:0:6}))
    ((us > 0)) && echo "$((bytes / us)) MB/s" || echo "?"
}

# The disk's speed drifts from one run to the next (here 0.4-2 GB/s within minutes): take the
# median of three, and measure again after the benches.
echo "== dd: 256 MiB sequential write, one fdatasync at the end (conv=fdatasync), 3 runs"
seq_runs=()
for _ in 1 2 3; do
    measure one if=/dev/zero of="$dir/dd.test" bs=1M count=256 conv=fdatasync
    rm -f "$dir/dd.test"
    seq_runs+=("$one")
done
# Median by elapsed seconds (each run writes the same bytes).
mapfile -t sorted < <(printf '%s\n' "${seq_runs[@]}" | sort -t ' ' -k2,2g)
dd_seq="${sorted[1]:-}"
echo "   median: $(mb_per_s "$dd_seq")"
echo "== dd: 2000 writes of 528000 bytes (one batch of 500 framed 1 KiB records), each synced"
measure dd_batches if=/dev/zero of="$dir/dd.test" bs=528000 count=2000 oflag=dsync
rm -f "$dir/dd.test"
echo "== dd: 2000 writes of 4 KiB, each synced (oflag=dsync)"
measure dd_4k if=/dev/zero of="$dir/dd.test" bs=4k count=2000 oflag=dsync
rm -f "$dir/dd.test"
export SHOAL_DD_SEQ="$dd_seq" SHOAL_DD_BATCHES="$dd_batches" SHOAL_DD_DSYNC_4K="$dd_4k"

rm -f "$dir/append-volume"
echo "== cargo bench -p shoal-benches --bench log -- $*"
cargo bench -p shoal-benches --bench log -- "$@"

# The target compares `always` appends with dd; 256 MiB fits in the virtual disk's fast burst,
# while the appends write several GB (criterion runs them for seconds) and so also meet its slow
# phase. The bench leaves in append-volume the bytes `append/always/1KiB_x500` wrote and its
# median payload rate: write the same volume with dd, one fdatasync at the end, and compare.
if [[ -s "$dir/append-volume" ]]; then
    read -r volume append_rate < "$dir/append-volume"
    mib=$(((volume + (1 << 20) - 1) >> 20))
    echo "== dd: the volume append/always/1KiB_x500 wrote ($mib MiB), one fdatasync at the end"
    measure dd_same if=/dev/zero of="$dir/dd.test" bs=1M count="$mib" conv=fdatasync
    rm -f "$dir/dd.test"
    dd_same_rate="$(mb_per_s "$dd_same")"
    append_mb=$((append_rate / 1000000))
    if [[ "$dd_same_rate" =~ ^([0-9]+)\ MB/s$ ]] && ((append_mb > 0)); then
        ratio=$((BASH_REMATCH[1] * 100 / append_mb))
        verdict=MISSED
        ((ratio <= 150)) && verdict=MET
        printf -- '- same volume: dd %s, append/always/1KiB_x500 %s MB/s of payload, dd is %d.%02dx that (%s)\n' \
            "$dd_same_rate" "$append_mb" $((ratio / 100)) $((ratio % 100)) "$verdict"
    fi
    rm -f "$dir/append-volume"
fi

echo "== dd again, after the benches (the disk's speed drifts)"
measure dd_seq_after if=/dev/zero of="$dir/dd.test" bs=1M count=256 conv=fdatasync
rm -f "$dir/dd.test"
echo "== dd conv=fdatasync, 256 MiB: $(mb_per_s "$dd_seq") before the benches," \
    "$(mb_per_s "$dd_seq_after") after"
