#!/usr/bin/env bash
# Checkpoint speed on this machine, in one run (docs/performance.md, "Checkpoint I/O"):
#
#   1. the disk's own synced sequential write rate: dd of 1 GiB with conv=fdatasync, and its
#      read rate back (caches dropped when this user may, else said so);
#   2. titan-train's full checkpoint of the 58M benchmark model (fp32 weights + the two
#      AdamW moments, ~0.7 GB) written and read back at 1 and at 4 ranks: MB/s from the
#      file's size and the times the trainer logs (the write includes the fsync of the data
#      and the folder), as a share of the disk's rates;
#   3. the step-time cost of an asynchronous save: the same run with a save every 4 steps,
#      synchronous and asynchronous, against no saves (1 rank training on all cores but one:
#      the I/O thread's core, as a GPU node's spare cores are; the kernel's copy of the file
#      into the page cache is a core's work), ROUNDS (3) rounds of the three, the median
#      round's cost reported; and what the saving steps waited for.
#
#   tools/bench/ckpt_io.sh      the files go under ${CKPT_BENCH_DIR:-/tmp} (the disk measured)
#
# Environment: CKPT_BENCH_DIR (a folder on the disk to measure), TITAN_BUILD_DIR (build),
# KEEP=1 keeps the files, ROUNDS. About 5 minutes on the 2-core machine.
set -euo pipefail
bench=ckpt_io np=4 STEPS=${STEPS:-6} WARMUP=${WARMUP:-1}
SEQ=${SEQ:-128} BATCH=${BATCH:-4}
title="Checkpoint I/O: titan-train's save and load of the 58M model against the disk's dd rate"
source "$(dirname "${BASH_SOURCE[0]}")/rank_step_common.sh"
target=${CKPT_BENCH_DIR:-/tmp}/titan_ckpt_io.$$
mkdir -p "$target"
trap 'rm -rf "$target" "$work"' EXIT

echo "-- disk: dd 1 GiB to $target with conv=fdatasync"
dd if=/dev/zero of="$target/dd.bin" bs=16M count=64 conv=fdatasync 2>&1 | tail -1 | tee "$work/dd_write.txt"
if sync && echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then cold=1; else cold=0; fi
dd if="$target/dd.bin" of=/dev/null bs=16M 2>&1 | tail -1 | tee "$work/dd_read.txt"
rm -f "$target/dd.bin"

# The checkpoint folder on the measured disk (an absolute checkpoint.folder is used as is).
for ranks in 1 4; do
  ckpt=(--checkpoint.enable --checkpoint.no_last_save_model_only --checkpoint.interval 1000
        --checkpoint.folder "$target/r$ranks" --training.local_batch_size $((batch / ranks)))
  run_side "save_r$ranks" "$ranks" --training.steps 1 "${ckpt[@]}"
  grep -E 'saved ' "$work/save_r$ranks.log" | sed 's/^\[titan [0-9:]*\] /   /'
  if [ "$cold" = 1 ]; then sync && echo 3 > /proc/sys/vm/drop_caches; fi
  run_side "load_r$ranks" "$ranks" --training.steps 2 "${ckpt[@]}"
  grep -E 'loaded ' "$work/load_r$ranks.log" | sed 's/^\[titan [0-9:]*\] /   /'
  stat -c %s "$target/r$ranks/step-1.h5" > "$work/size_r$ranks.txt"
done

cores=$(nproc)
export SIDE_THREADS=$((cores > 1 ? cores - 1 : 1))
every=(--training.steps 13 --training.local_batch_size "$batch" --checkpoint.interval 4
       --checkpoint.no_last_save_model_only)
# The three sides in turn, ROUNDS times (this machine's step times drift between runs):
# each ratio is taken within a round, and the median round's is reported.
rounds=${ROUNDS:-3}
for round in $(seq "$rounds"); do
  run_side "async_none_$round" 1 "${every[@]}"
  run_side "async_sync_$round" 1 "${every[@]}" --checkpoint.enable \
    --checkpoint.folder "$target/sync_$round"
  run_side "async_async_$round" 1 "${every[@]}" --checkpoint.enable --checkpoint.async_mode async \
    --checkpoint.folder "$target/async_$round"
done
unset SIDE_THREADS

python3 - "$work" "$warmup" "$cold" "$((cores > 1 ? cores - 1 : 1))" "$rounds" <<'PY'
import json, re, sys
work, warmup, cold, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
def dd_rate(name):  # "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 1.05 s, 1.0 GB/s"
    text = open(f"{work}/{name}").read()
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", text)
    return int(m.group(1)) / float(m.group(2)) / 1e6
def seconds(name, what):
    m = re.search(what + r".* in ([\d.]+) s", open(f"{work}/{name}.log").read())
    return float(m.group(1))
write, read = dd_rate("dd_write.txt"), dd_rate("dd_read.txt")
print(f"== disk: dd write (fdatasync) {write:.0f} MB/s, read {read:.0f} MB/s"
      + ("" if cold else " (page cache not dropped: read from memory)"))
print(f"{'checkpoint':14s} {'MB':>7s} {'write MB/s':>11s} {'of dd':>6s} {'read MB/s':>10s} {'of dd':>6s}")
for ranks in (1, 4):
    size = int(open(f"{work}/size_r{ranks}.txt").read()) / 1e6
    w = size / seconds(f"save_r{ranks}", "saved")
    r = size / seconds(f"load_r{ranks}", "tensors read")
    print(f"{str(ranks) + ' rank(s)':14s} {size:7.0f} {w:11.0f} {w / write:5.0%} {r:10.0f} {r / read:5.0%}")
def step_s(name):  # mean seconds per step over the steps after the warmup
    rows = [json.loads(l) for l in open(f"{work}/{name}/metrics.jsonl") if l.strip()]
    rows = [r for r in rows if r["step"] >= warmup]
    return (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]) / (rows[-1]["step"] - rows[0]["step"])
rounds = int(sys.argv[5])
print(f"== 1 rank on {threads} thread(s), a save every 4 steps: mean step time against no "
      f"saves in the same round, {rounds} rounds")
costs = {"sync": [], "async": []}
for r in range(1, rounds + 1):
    base = step_s(f"async_none_{r}")
    row = f"round {r}: no saves {base:.3f} s/step"
    for side in ("sync", "async"):
        t = step_s(f"async_{side}_{r}")
        costs[side].append(t / base - 1)
        row += f", {side} {t:.3f} ({t / base - 1:+.1%})"
    print(row)
for side, label in (("sync", "synchronous"), ("async", "asynchronous")):
    print(f"{label:14s} median {sorted(costs[side])[rounds // 2]:+.1%}")
waited = [float(x) for r in range(1, rounds + 1) for x in re.findall(
    r"the step waited ([\d.]+) s", open(f"{work}/async_async_{r}.log").read())]
print(f"asynchronous: the saving steps waited {min(waited):.2f} to {max(waited):.2f} s "
      f"(copying the state into the staging made at start)")
PY
