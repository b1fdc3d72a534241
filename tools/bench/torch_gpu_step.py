#!/usr/bin/env python3
"""PyTorch peer of titan.cpp's GPU training step (tools/bench/gpu_step.sh runs it).

The model is tools/reference/llama3_reference.py's (torchtitan's Llama 3), with attention
through F.scaled_dot_product_attention (flash, GQA) as torchtitan runs it on a GPU, bf16
autocast over fp32 parameters, fused AdamW, clipping at 1.0, synthetic tokens. Modes:
eager, compile (torch.compile of the model). Also the GEMM ceiling: an 8192^3 bf16 matmul.

  python3 torch_gpu_step.py step --dim 2048 ... --mode compile --json out.json
  python3 torch_gpu_step.py gemm --json gemm.json
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import llama3_reference as ref  # noqa: E402


def sdpa_causal_attention(q, k, v):
    """q [B, T, Hq, hd], k/v [B, T, Hkv, hd] -> [B, T, Hq, hd] through PyTorch's fused kernels."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         is_causal=True, enable_gqa=q.shape[2] != k.shape[2])
    return out.transpose(1, 2)


def median_event_ms(fn, warmup, repeat):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), times


def command_gemm(args):
    n = args.n
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms, _ = median_event_ms(lambda: a @ b, 3, 20)
    result = {"n": n, "ms": ms, "tflops": 2 * n**3 / (ms * 1e-3) / 1e12,
              "device": torch.cuda.get_device_name()}
    print(f"gemm: bf16 {n}^3 on {result['device']}: {ms:.3f} ms, {result['tflops']:.0f} TFLOP/s")
    write_json(args.json, result)


def command_step(args):
    ref.causal_attention = sdpa_causal_attention
    torch.backends.cuda.matmul.allow_tf32 = False
    scaling = {"enabled": True, "factor": args.rope_factor, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_positions": 8192}
    cfg = {"dim": args.dim, "n_layers": args.n_layers, "n_heads": args.n_heads,
           "n_kv_heads": args.n_kv_heads, "vocab_size": args.vocab_size, "ffn_dim": args.ffn_dim,
           "norm_eps": 1e-5, "rope_theta": 500000.0, "rope_scaling": scaling,
           "weight_tying": args.weight_tying, "seq_len": args.seq_len}
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = ref.Transformer(cfg)
    ref.init_weights(model, cfg)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=8e-4, betas=(0.9, 0.95), eps=1e-8,
                                  weight_decay=0.1, fused=True)
    forward = torch.compile(model) if args.mode == "compile" else model
    B, T, V = args.batch_size, args.seq_len, args.vocab_size

    def step():
        windows = torch.randint(0, V, (B, T + 1), device="cuda")
        tokens, labels = windows[:, :-1], windows[:, 1:]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = forward(tokens)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="sum") / labels.numel()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss

    started = time.perf_counter()
    step()  # compiles in compile mode
    torch.cuda.synchronize()
    first_s = time.perf_counter() - started
    ms, times = median_event_ms(step, args.warmup, args.steps)
    result = {"mode": args.mode, "tokens_per_s": B * T / (ms * 1e-3), "step_ms_median": ms,
              "step_ms": times, "first_step_s": first_s, "parameters": n_params,
              "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
              "torch_version": torch.__version__, "device": torch.cuda.get_device_name()}
    print(f"torch {args.mode}: {n_params / 1e9:.2f}B parameters, batch {B} x {T}: {ms:.1f} ms per "
          f"step, {result['tokens_per_s']:.0f} tokens/s, first step {first_s:.1f} s, peak "
          f"{result['peak_memory_gib']:.1f} GiB")
    write_json(args.json, result)


def write_json(path, result):
    if path:
        with open(path, "w") as f:
            json.dump(result, f)
            f.write("\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    gemm = sub.add_parser("gemm")
    gemm.add_argument("--n", type=int, default=8192)
    gemm.add_argument("--json")
    step = sub.add_parser("step")
    for name, default in [("dim", 2048), ("n-layers", 16), ("n-heads", 32), ("n-kv-heads", 8),
                          ("ffn-dim", 8192), ("vocab-size", 128256), ("seq-len", 2048),
                          ("batch-size", 4), ("steps", 10), ("warmup", 3)]:
        step.add_argument("--" + name, type=int, default=default)
    step.add_argument("--rope-factor", type=float, default=32.0)
    step.add_argument("--weight-tying", action="store_true")
    step.add_argument("--mode", choices=["eager", "compile"], default="eager")
    step.add_argument("--json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("torch_gpu_step: no CUDA device visible to PyTorch")
    {"gemm": command_gemm, "step": command_step}[args.command](args)


if __name__ == "__main__":
    main()
