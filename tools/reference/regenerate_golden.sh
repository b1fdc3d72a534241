#!/usr/bin/env bash
# Regenerates the golden data of the model tests (test/golden/<family>/<variant>/) from
# titan.cpp's own initialization and batches (export_reference_inputs) and the independent
# PyTorch references (llama3_reference.py, deepseek_v3_reference.py; Debian's torch:
# tools/setup.sh --with-torch).
#   tools/reference/regenerate_golden.sh            all variants
# Environment: TITAN_BUILD_DIR (default build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
build=${TITAN_BUILD_DIR:-build}
ninja -C "$build" export_reference_inputs >/dev/null
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import torch' 2>/dev/null ||
  { echo "regenerate_golden: needs Debian's python3-torch (tools/setup.sh --with-torch)" >&2; exit 2; }

# Every variant: the tiny flavor, 5 steps of the debug job's schedule (warmup, then WSD
# decay), one sequence of 64 per microbatch, on synthetic tokens unless it says otherwise.
common=(--config configs/llama3_debug.yaml --model.flavor tiny --training.dataset synthetic
        --training.seq_len 64 --training.local_batch_size 1 --training.steps 5
        --lr_scheduler.warmup_steps 2 --optimizer.lr 1e-3)
documents=test/golden/llama3/documents
declare -A variants=(
  # max_norm below the initial gradient norm, so that clipping acts
  [tiny]="--training.max_norm 0.5"
  # tied output, 2 accumulated microbatches, cosine decay to a floor; 2 layers keep it small
  [tiny_tied]="--model.n_layers 2 --model.enable_weight_tying --training.global_batch_size 2
               --lr_scheduler.decay_type cosine --lr_scheduler.min_lr_factor 0.1"
  # attention within documents: real text whose documents (one sentence each) are shorter
  # than a sequence, so that every window holds document boundaries
  [tiny_block_causal]="--training.max_norm 0.5 --model.attn_mask_type block_causal
                       --training.dataset documents --training.dataset_path $documents"
  # Float8 linears (torchao's Float8Linear, simulated in float32 by the reference): every
  # layer linear converts (the tiny flavor's dims are multiples of 16), the output does not
  [tiny_float8]="--training.max_norm 0.5 --model.converters quantize.linear.float8"
  [tiny_float8_rowwise]="--training.max_norm 0.5 --model.converters quantize.linear.float8
                         --quantize.linear.float8.recipe_name rowwise"
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The documents: the sentences of Washington's 1790 address, tokenized with the SOTU
# tokenizer into a committed shard folder (the golden test's trainer reads it).
ninja -C "$build" titan-data >/dev/null
python3 - "$work/documents.jsonl" <<'PY'
import json, re, sys
text = open("assets/text/sotu/1790_george_washington_n.txt", encoding="utf-8").read()
with open(sys.argv[1], "w") as out:
    for sentence in re.split(r"(?<=[.;:])\s+", " ".join(text.split())):
        out.write(json.dumps({"text": sentence}) + "\n")
PY
rm -rf "$documents"
"$build/apps/titan-data" tokenize --tokenizer assets/tokenizer/sotu-2k --out "$documents" \
    --validation-fraction 0 "$work/documents.jsonl" >/dev/null
# golden FAMILY VARIANT ARGS...: exports the inputs, runs the family's reference, commits
# config.json, the batch, the merged job config and the golden files.
golden() {
  local family=$1 variant=$2
  shift 2
  "$build/tools/reference/export_reference_inputs" "$@" --job.dump_folder "$work/$family/$variant/in"
  /usr/bin/python3 "tools/reference/${family}_reference.py" golden "$work/$family/$variant/in" \
      "$work/$family/$variant/out"
  local dest=test/golden/$family/$variant
  rm -rf "$dest" && mkdir -p "$dest"
  cp "$work/$family/$variant/in/"{config.json,batch.safetensors,job.yaml} "$dest/"
  cp "$work/$family/$variant/out/"golden*.safetensors "$dest/"
  echo "regenerate_golden: $dest ($(du -sh "$dest" | cut -f1))"
}
for variant in "${!variants[@]}"; do
  read -r -a extra <<<"$(echo ${variants[$variant]})"
  golden llama3 "$variant" "${common[@]}" "${extra[@]}"
done
# DeepSeek V3's tiny flavor (a query rank, sigmoid scores routed within 2 of 4 expert groups
# with route_norm, YaRN active at seq_len 64): the same 5 steps, clipping acting.
golden deepseek_v3 tiny --config configs/deepseek_v3_debug.yaml --model.flavor tiny \
    "${common[@]:4}" --training.max_norm 0.5
# DeepSeek's published format: the tiny DeepSeek V3 in Hugging Face's layout with FP8 weights
# in 16 x 16 blocks (some ragged) and a routing bias, and the reference's logits of it
# (test/unit/train/deepseek_v3_hf_import_test.cpp imports and compares).
rm -rf test/golden/deepseek_v3/hf_fp8
/usr/bin/python3 tools/reference/deepseek_v3_reference.py make-hf test/golden/deepseek_v3/hf_fp8 \
    --fp8 --block 16 --batch-size 1 --seq-len 40 \
    --reference test/golden/deepseek_v3/hf_fp8_reference.safetensors
