#!/usr/bin/env bash
# Context parallelism and per-document attention on this machine, in one run
# (docs/performance.md, "Context parallelism and per-document attention"):
#
#   1. the debug model at long sequences on 2 ranks x 1 thread, as CP 2 with each rotate
#      method (allgather, alltoall) and as FSDP 2, against 1 rank x 2 threads on the same
#      global batch: tokens/s, the share of the step blocked in communication, MiB moved per
#      rank per step, peak memory per rank;
#   2. block-causal against causal attention on 1 rank x 2 threads, on real text cut into
#      documents of about DOC_TOKENS tokens (the SOTU corpus, tokenized here): the tiles the
#      mask empties are skipped, and the step time shows it.
#
#   tools/bench/cp_step.sh              debug model (dim 256, 6 layers, 16 heads, vocab
#                                       2048), global batch 2 x seq 4096
#   SEQ=8192 tools/bench/cp_step.sh     longer sequences
#
# Medians over steps WARMUP+1..STEPS. Environment: STEPS (4), WARMUP (1), TITAN_BUILD_DIR
# (build), KEEP=1 keeps the logs; DIM, LAYERS, HEADS, KV_HEADS, FFN, VOCAB, SEQ, BATCH change
# the model (VOCAB stays 2048 for part 2: the SOTU tokenizer's); DOC_TOKENS (512); PARTS
# ("cp docs") picks the parts. About 6 minutes on the 2-core machine.
set -euo pipefail
bench=cp_step np=2
STEPS=${STEPS:-4} WARMUP=${WARMUP:-1}
DIM=${DIM:-256} LAYERS=${LAYERS:-6} HEADS=${HEADS:-16} KV_HEADS=${KV_HEADS:-16}
FFN=${FFN:-768} VOCAB=${VOCAB:-2048} SEQ=${SEQ:-4096} BATCH=${BATCH:-2}
title="CP step: CP 2 (allgather, alltoall) and FSDP 2 against 1 rank; block-causal vs causal"
source "$(dirname "${BASH_SOURCE[0]}")/rank_step_common.sh"
parts=${PARTS:-cp docs} doc_tokens=${DOC_TOKENS:-512}

if [[ $parts == *cp* ]]; then
  run_side alone 1 --training.local_batch_size "$batch"
  run_side fsdp 2 --training.local_batch_size $((batch / np))
  for rotate in allgather alltoall; do
    run_side "cp_$rotate" 2 --parallelism.context_parallel_degree 2 \
      --parallelism.data_parallel_shard_degree 1 --training.local_batch_size "$batch" \
      --parallelism.context_parallel_rotate_method "$rotate"
  done
fi

if [[ $parts == *docs* ]]; then
  # Documents of about doc_tokens tokens: the SOTU addresses cut every ~4 doc_tokens bytes
  # (the SOTU tokenizer makes about 4 bytes a token), each piece one JSONL document.
  python3 - "$root/assets/text/sotu" "$work/documents.jsonl" $((4 * doc_tokens)) <<'PY'
import glob, json, sys
folder, out, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(out, "w") as f:
    for path in sorted(glob.glob(f"{folder}/*.txt")):
        text = " ".join(open(path, encoding="utf-8").read().split())
        for i in range(0, len(text), size):
            f.write(json.dumps({"text": text[i:i + size]}) + "\n")
PY
  "$build_dir/apps/titan-data" tokenize --tokenizer "$root/assets/tokenizer/sotu-2k" \
    --out "$work/documents" --validation-fraction 0 "$work/documents.jsonl" > /dev/null
  docs=(--training.dataset documents --training.dataset_path "$work/documents"
    --training.local_batch_size "$batch")
  run_side docs_causal 1 "${docs[@]}" --model.attn_mask_type causal
  run_side docs_block_causal 1 "${docs[@]}" --model.attn_mask_type block_causal
fi

python3 - "$work" "$warmup" "$seq" "$doc_tokens" <<'PY'
import json, os, statistics, sys
work, warmup, seq, doc_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def rows(name):
    path = f"{work}/{name}/metrics.jsonl"
    return [r for r in (json.loads(l) for l in open(path) if l.strip()) if r["step"] > warmup]
def median(name, key, default=0.0):
    return statistics.median(r.get(key, default) for r in rows(name))
if os.path.isdir(f"{work}/alone"):
    alone_tps = median("alone", "tps")
    print(f"== seq {seq}: tokens/s of all ranks together; comm: share of the step blocked;"
          " peak GiB: the larger rank's")
    print(f"{'side':22s} {'tokens/s':>9s} {'vs 1 rank':>9s} {'comm %':>7s}"
          f" {'MiB/step/rank':>14s} {'peak GiB':>9s} {'loss gap':>9s}")
    sides = {"alone": ("1 rank x 2 threads", 1), "fsdp": ("FSDP 2", 2),
             "cp_allgather": ("CP 2 allgather", 2), "cp_alltoall": ("CP 2 alltoall (ring)", 2)}
    for name, (label, ranks) in sides.items():
        tps = ranks * median(name, "tps")
        gap = max(abs(a["loss"] - b["loss"]) / abs(a["loss"])
                  for a, b in zip(rows("alone"), rows(name)))
        print(f"{label:22s} {tps:9.1f} {tps / alone_tps:8.2f}x"
              f" {median(name, 'comm_percent'):6.1f}% {median(name, 'comm_mib_per_step'):14.1f}"
              f" {median(name, 'memory_gib'):9.3f} {gap:9.1e}")
if os.path.isdir(f"{work}/docs_causal"):
    causal, block = median("docs_causal", "tps"), median("docs_block_causal", "tps")
    print(f"== 1 rank x 2 threads, seq {seq}, documents of ~{doc_tokens} tokens (SOTU)")
    print(f"{'mask':22s} {'tokens/s':>9s} {'vs causal':>9s} {'first loss':>12s}")
    for name, label, tps in (("docs_causal", "causal", causal),
                             ("docs_block_causal", "block_causal", block)):
        print(f"{label:22s} {tps:9.1f} {tps / causal:8.2f}x {rows(name)[0]['loss']:12.4f}")
PY
