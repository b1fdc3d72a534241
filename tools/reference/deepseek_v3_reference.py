#!/usr/bin/python3
"""Independent PyTorch reference of torchtitan's DeepSeek V3 training step (golden data).

Written from torchtitan's DeepSeek V3 (models/deepseek_v3: MLA attention with YaRN RoPE,
dense and MoE feed-forwards; models/moe: token-choice top-K router with sigmoid or softmax
scores, group-limited routing, shared experts, auxiliary-loss-free load balancing) and the
training step it shares with Llama 3, not from the C++ code. Runs with Debian's
python3-torch (1.13, CPU, float32) as /usr/bin/python3, like llama3_reference.py, whose
pieces it imports (safetensors by hand, loss, LR schedule, fingerprints). The folder
contract is in README.md, section "DeepSeek V3".

  deepseek_v3_reference.py golden INPUT_DIR OUTPUT_DIR   init/batch/config -> golden*.safetensors
  deepseek_v3_reference.py make-inputs DIR [options]     random inputs with torchtitan's init rules
  deepseek_v3_reference.py make-hf OUT_DIR [options]     a Hugging Face folder (--fp8: DeepSeek's
                                                         float8 blocks) + reference logits
  deepseek_v3_reference.py check                         self-test of this file's pieces
"""

import argparse
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama3_reference as L  # noqa: E402  (the shared pieces: safetensors, loss, schedule)

IGNORE_INDEX = L.IGNORE_INDEX
# torchtitan builds the final norm as nn.RMSNorm(dim) without eps: torch then uses the
# machine epsilon of float32 (the model's dtype), not norm_eps.
FINAL_NORM_EPS = torch.finfo(torch.float32).eps
FD_STEP = 1e-5  # the self-test's central differences (float64)
ROUTE_NORM_EPS = 1e-20  # added to the sum of the K picked scores before dividing

# ------------------------------------------------------------------------------------------
# Config (config.json of the input folder; README.md lists the keys)

MODEL_KEYS = {
    "dim", "n_layers", "n_dense_layers", "n_heads", "vocab_size", "inter_dim", "moe_inter_dim",
    "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
    "norm_eps", "rope_theta", "rope_factor", "beta_fast", "beta_slow", "original_seq_len",
    "mscale", "num_experts", "num_shared_experts", "top_k", "score_func", "route_norm",
    "route_scale", "score_before_experts", "n_expert_groups", "n_limited_groups",
    "load_balance_coeff",
}
TRAINING_KEYS = {
    "batch_size", "seq_len", "accumulation_steps", "steps", "lr", "beta1", "beta2", "eps",
    "weight_decay", "warmup_steps", "decay_ratio", "decay_type", "min_lr_factor", "max_norm",
}
REQUIRED_KEYS = MODEL_KEYS | TRAINING_KEYS
OPTIONAL_KEYS = {"flavor", "seed", "source"}  # informational only
SCORE_FUNCS = ("sigmoid", "softmax")


def load_config(path):
    with open(path) as f:
        cfg = json.load(f)
    missing = REQUIRED_KEYS - cfg.keys()
    unknown = cfg.keys() - REQUIRED_KEYS - OPTIONAL_KEYS
    if missing or unknown:
        raise ValueError(f"{path}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    check_model_config(cfg, path)
    if cfg["decay_type"] not in ("linear", "sqrt", "cosine"):
        raise ValueError(f"{path}: decay_type must be linear, sqrt or cosine")
    return cfg


def check_model_config(cfg, where):
    """The model keys' types and the relations between them that the model relies on."""
    def need(ok, what):
        if not ok:
            raise ValueError(f"{where}: {what}")

    for key in ("dim", "n_layers", "n_dense_layers", "n_heads", "vocab_size", "inter_dim",
                "moe_inter_dim", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                "qk_rope_head_dim", "v_head_dim", "original_seq_len", "num_experts",
                "num_shared_experts", "top_k", "n_expert_groups", "n_limited_groups", "seq_len"):
        v = cfg[key]
        need(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"{key} must be an integer >= 0")
    for key in ("route_norm", "score_before_experts"):
        need(isinstance(cfg[key], bool), f"{key} must be true or false")
    need(cfg["score_func"] in SCORE_FUNCS, f"score_func must be one of {SCORE_FUNCS}")
    need(0 <= cfg["n_dense_layers"] <= cfg["n_layers"], "n_dense_layers must lie in [0, n_layers]")
    need(cfg["qk_rope_head_dim"] % 2 == 0 and cfg["qk_rope_head_dim"] > 0,
         "qk_rope_head_dim must be even and > 0 (RoPE pairs)")
    E, G = cfg["num_experts"], cfg["n_expert_groups"]
    need(E >= 1 and 1 <= cfg["top_k"] <= E, "need 1 <= top_k <= num_experts")
    need(G >= 1 and E % G == 0, "n_expert_groups must be >= 1 and divide num_experts")
    if G > 1:
        # a group's score is the sum of its 2 largest choices
        need(E // G >= 2, "group-limited routing needs at least 2 experts per group")
        need(1 <= cfg["n_limited_groups"] <= G, "n_limited_groups must lie in [1, n_expert_groups]")
        need(cfg["top_k"] <= cfg["n_limited_groups"] * (E // G),
             "top_k must not exceed the experts of the kept groups")
    coeff = cfg["load_balance_coeff"]
    need(coeff is None or (isinstance(coeff, (int, float)) and not isinstance(coeff, bool) and coeff > 0),
         "load_balance_coeff must be null or > 0")


# ------------------------------------------------------------------------------------------
# RoPE with YaRN, MLA attention


def yarn_correction_range(cfg):
    """(low, high) dims of YaRN's ramp: floor/ceil of the correction dims of beta_fast and
    beta_slow, clamped to [0, rope - 1]; high is nudged when they meet (no 0/0)."""
    rope, theta, orig = cfg["qk_rope_head_dim"], cfg["rope_theta"], cfg["original_seq_len"]

    def correction_dim(rotations):
        return rope * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(correction_dim(cfg["beta_fast"])), 0)
    high = min(math.ceil(correction_dim(cfg["beta_slow"])), rope - 1)
    if low == high:
        high += 0.001
    return low, high


def yarn_active(cfg):
    return cfg["seq_len"] > cfg["original_seq_len"]


def rope_frequencies(cfg):
    """f_j = 1 / theta^(2j/rope), float32 as torch computes it; YaRN (when seq_len exceeds
    original_seq_len) divides the low frequencies by rope_factor, with a linear ramp between."""
    rope = cfg["qk_rope_head_dim"]
    freqs = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, rope, 2, dtype=torch.float32) / rope))
    if yarn_active(cfg):
        low, high = yarn_correction_range(cfg)
        ramp = torch.clamp((torch.arange(rope // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
        smooth = 1 - ramp
        freqs = freqs / cfg["rope_factor"] * (1 - smooth) + freqs * smooth
    return freqs


def rope_table(cfg):
    """Complex [seq_len, rope/2]: e^{i t f_j}, angles t f_j in float32."""
    freqs = rope_frequencies(cfg)
    angles = torch.outer(torch.arange(cfg["seq_len"], dtype=torch.float32), freqs)
    return torch.polar(torch.ones_like(angles), angles)


def softmax_scale(cfg):
    """qk^-0.5, times mscale^2 when YaRN is active (mscale = 0.1 m ln(rope_factor) + 1)."""
    scale = (cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]) ** -0.5
    if yarn_active(cfg):
        m = 0.1 * cfg["mscale"] * math.log(cfg["rope_factor"]) + 1.0
        scale *= m * m
    return scale


def causal_attention(q, k, v, scale):
    """q, k [B, T, H, qk], v [B, T, H, vd] -> [B, T, H, vd]: softmax(q k^T scale + causal
    mask) v per head, written out (torch 1.13 has no scaled_dot_product_attention)."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, .]
    T = q.shape[2]
    scores = (q @ k.transpose(-2, -1)) * scale
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    probs = torch.softmax(L.compute_dtype(scores), dim=-1).type_as(q)
    return (probs @ v).transpose(1, 2)


class MLA(nn.Module):
    """Multi-head latent attention: q from x (directly or through the rank-q_lora_rank
    bottleneck with its norm), k/v from a rank-kv_lora_rank latent; one rotary key part
    shared by all heads."""

    def __init__(self, cfg):
        super().__init__()
        D, H = cfg["dim"], cfg["n_heads"]
        self.n_heads = H
        self.nope, self.rope = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"]
        self.v_dim, self.kv_rank = cfg["v_head_dim"], cfg["kv_lora_rank"]
        self.q_lora_rank = cfg["q_lora_rank"]
        qk = self.nope + self.rope
        if self.q_lora_rank == 0:
            self.wq = nn.Linear(D, H * qk, bias=False)
        else:
            self.wq_a = nn.Linear(D, self.q_lora_rank, bias=False)
            self.q_norm = L.RMSNorm(self.q_lora_rank, cfg["norm_eps"])
            self.wq_b = nn.Linear(self.q_lora_rank, H * qk, bias=False)
        self.wkv_a = nn.Linear(D, self.kv_rank + self.rope, bias=False)
        self.kv_norm = L.RMSNorm(self.kv_rank, cfg["norm_eps"])
        self.wkv_b = nn.Linear(self.kv_rank, H * (self.nope + self.v_dim), bias=False)
        self.wo = nn.Linear(H * self.v_dim, D, bias=False)
        self.scale = softmax_scale(cfg)

    def forward(self, x, freqs_cis):
        B, T, _ = x.shape
        H = self.n_heads
        q = self.wq(x) if self.q_lora_rank == 0 else self.wq_b(self.q_norm(self.wq_a(x)))
        q_nope, q_pe = torch.split(q.view(B, T, H, self.nope + self.rope), [self.nope, self.rope], -1)
        q = torch.cat([q_nope, L.apply_rope(q_pe, freqs_cis)], dim=-1)
        c, k_pe = torch.split(self.wkv_a(x), [self.kv_rank, self.rope], dim=-1)
        k_pe = L.apply_rope(k_pe.unsqueeze(2), freqs_cis)  # one head: [B, T, 1, rope]
        kv = self.wkv_b(self.kv_norm(c)).view(B, T, H, self.nope + self.v_dim)
        k_nope, v = torch.split(kv, [self.nope, self.v_dim], dim=-1)
        k = torch.cat([k_nope, k_pe.expand(-1, -1, H, -1)], dim=-1)
        return self.wo(causal_attention(q, k, v, self.scale).reshape(B, T, H * self.v_dim))


# ------------------------------------------------------------------------------------------
# MoE: router, routed experts, shared experts, load-balancing bias


def stable_top_indices(x, k):
    """Indices of the k largest entries of each row, in descending order, ties by LOWER
    index (a stable sort; torch.topk's order among ties is unspecified)."""
    return torch.sort(x, dim=-1, descending=True, stable=True).indices[..., :k]


def select_experts(choice, top_k, n_groups, n_limited):
    """choice [N, E] -> (selected [N, K] expert indices, margin): group-limited top-K. With
    n_groups > 1 only the n_limited groups with the largest scores (sum of the group's 2
    largest choices; ties: lower group) compete. margin: the smallest gap, over tokens,
    between the last kept and the first dropped group score or choice (0: a tie decided
    by the index rule)."""
    choice = choice.detach()
    N, E = choice.shape
    margins = []
    if n_groups > 1:
        grouped = choice.reshape(N, n_groups, E // n_groups)
        group_scores = grouped.sort(dim=-1, descending=True).values[..., :2].sum(-1)
        keep = stable_top_indices(group_scores, n_limited)
        dropped = torch.ones(N, n_groups, dtype=torch.bool).scatter(1, keep, False)
        choice = grouped.masked_fill(dropped[..., None], float("-inf")).view(N, E)
        if n_limited < n_groups:
            g = group_scores.sort(dim=-1, descending=True).values
            margins.append((g[:, n_limited - 1] - g[:, n_limited]).min())
    selected = stable_top_indices(choice, top_k)
    if top_k < E:
        v = choice.sort(dim=-1, descending=True).values
        margins.append((v[:, top_k - 1] - v[:, top_k]).min())  # inf where the next is -inf
    margin = min((float(m) for m in margins), default=float("inf"))
    return selected, margin


def route(logits, expert_bias, cfg):
    """Router logits [N, E] -> (selected [N, K], top_scores [N, K], margin). Scores in fp32;
    the bias only chooses; top_scores carry the gradient into the gate."""
    z = L.compute_dtype(logits)
    scores = torch.sigmoid(z) if cfg["score_func"] == "sigmoid" else torch.softmax(z, dim=-1)
    choice = scores if expert_bias is None else scores + expert_bias
    selected, margin = select_experts(choice, cfg["top_k"], cfg["n_expert_groups"],
                                      cfg["n_limited_groups"])
    top_scores = scores.gather(1, selected)
    if cfg["route_norm"]:
        top_scores = top_scores / (top_scores.sum(dim=-1, keepdim=True) + ROUTE_NORM_EPS)
    return selected, top_scores * cfg["route_scale"], margin


class GroupedExperts(nn.Module):
    """E SwiGLU experts stored as [E, ...] tensors: y_e(x) = w2[e] (silu(w1[e] x) * w3[e] x)."""

    def __init__(self, dim, hidden, n_experts):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_experts, hidden, dim))
        self.w2 = nn.Parameter(torch.empty(n_experts, dim, hidden))
        self.w3 = nn.Parameter(torch.empty(n_experts, hidden, dim))

    def forward(self, x, selected, top_scores, score_before_experts):
        """x [N, D], selected/top_scores [N, K] -> sum over the K picks of the weighted
        expert outputs [N, D]. The (token, pick) pairs are grouped by expert (stable, so
        each expert sees its tokens in order) and put back before the sum over picks."""
        N, K = selected.shape
        flat = selected.reshape(-1)
        order = torch.sort(flat, stable=True).indices
        counts = torch.bincount(flat, minlength=self.w1.shape[0]).tolist()
        xs = x.index_select(0, torch.div(order, K, rounding_mode="floor"))
        s = L.compute_dtype(top_scores.reshape(-1).index_select(0, order))[:, None]
        if score_before_experts:
            xs = (L.compute_dtype(xs) * s).type_as(x)
        outs = []
        for e, chunk in enumerate(torch.split(xs, counts)):
            h = F.silu(chunk @ self.w1[e].t()) * (chunk @ self.w3[e].t())
            outs.append(h @ self.w2[e].t())
        y = torch.cat(outs)
        if not score_before_experts:
            y = (L.compute_dtype(y) * s).type_as(x)
        routed = torch.zeros_like(y).index_copy(0, order, y)  # back to (token, pick) order
        return routed.view(N, K, -1).sum(1)


class Router(nn.Module):
    def __init__(self, dim, n_experts):
        super().__init__()
        self.gate = nn.Linear(dim, n_experts, bias=False)


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        D, F_, E, S = cfg["dim"], cfg["moe_inter_dim"], cfg["num_experts"], cfg["num_shared_experts"]
        self.cfg = cfg
        self.experts = GroupedExperts(D, F_, E)
        self.router = Router(D, E)
        self.shared_experts = L.FeedForward(D, F_ * S) if S > 0 else None
        self.load_balance_coeff = cfg["load_balance_coeff"]
        # expert_bias: routing only, updated once per step (update_expert_bias); a buffer,
        # so neither the optimizer nor the gradient norm sees it
        if self.load_balance_coeff is not None:
            self.register_buffer("expert_bias", torch.zeros(E, dtype=torch.float32))
        else:
            self.expert_bias = None
        # (token, pick) pairs per expert, summed over the step's microbatches
        self.register_buffer("tokens_per_expert", torch.zeros(E, dtype=torch.float32), persistent=False)
        self.last_selected = None  # the last forward's selection (the self-test's flip check)
        self.last_margin = float("inf")

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        selected, top_scores, margin = route(self.router.gate(x), self.expert_bias, self.cfg)
        with torch.no_grad():
            self.tokens_per_expert += torch.bincount(selected.reshape(-1), minlength=len(
                self.tokens_per_expert)).to(self.tokens_per_expert.dtype)
        self.last_selected, self.last_margin = selected, margin
        out = self.experts(x, selected, top_scores, self.cfg["score_before_experts"])
        if self.shared_experts is not None:
            out = self.shared_experts(x) + out
        return out.view(shape)


def load_balance_delta(counts, coeff):
    """Auxiliary-loss-free balancing: coeff * sign(mean - count), centred to mean 0."""
    delta = coeff * torch.sign(counts.mean() - counts)
    return delta - delta.mean()


def update_expert_bias(model):
    """Once per optimizer step, after the step's backward passes: every MoE layer with a
    bias moves it by load_balance_delta of its token counts; the counts restart at 0."""
    with torch.no_grad():
        for moe in model.moe_layers():
            if moe.expert_bias is not None:
                moe.expert_bias += load_balance_delta(moe.tokens_per_expert, moe.load_balance_coeff)
            moe.tokens_per_expert.zero_()


# ------------------------------------------------------------------------------------------
# Model


class TransformerBlock(nn.Module):
    def __init__(self, layer_id, cfg):
        super().__init__()
        # registration order = parameter order of the contract
        self.attention = MLA(cfg)
        self.attention_norm = L.RMSNorm(cfg["dim"], cfg["norm_eps"])
        self.ffn_norm = L.RMSNorm(cfg["dim"], cfg["norm_eps"])
        self.is_moe = layer_id >= cfg["n_dense_layers"]
        if self.is_moe:
            self.moe = MoE(cfg)
        else:
            self.feed_forward = L.FeedForward(cfg["dim"], cfg["inter_dim"])

    def forward(self, x, freqs_cis):
        h = x + self.attention(self.attention_norm(x), freqs_cis)
        ffn = self.moe if self.is_moe else self.feed_forward
        return h + ffn(self.ffn_norm(h))


class DeepSeekV3(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        check_model_config(cfg, "model config")
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg["vocab_size"], cfg["dim"])
        self.layers = nn.ModuleList(TransformerBlock(i, cfg) for i in range(cfg["n_layers"]))
        self.norm = L.RMSNorm(cfg["dim"], FINAL_NORM_EPS)
        self.output = nn.Linear(cfg["dim"], cfg["vocab_size"], bias=False)
        self.register_buffer("freqs_cis", rope_table(cfg), persistent=False)

    def moe_layers(self):
        return [layer.moe for layer in self.layers if layer.is_moe]

    def forward(self, tokens):
        h = self.tok_embeddings(tokens)
        freqs_cis = self.freqs_cis[: tokens.shape[1]]
        for layer in self.layers:
            h = layer(h, freqs_cis)
        return L.compute_dtype(self.output(self.norm(h)))  # logits in fp32


def parameter_names(cfg):
    """Every parameter's name, in the contract's order (= this model's named_parameters)."""
    names = ["tok_embeddings.weight"]
    for i in range(cfg["n_layers"]):
        a = f"layers.{i}.attention."
        if cfg["q_lora_rank"] == 0:
            names.append(a + "wq.weight")
        else:
            names += [a + "wq_a.weight", a + "q_norm.weight", a + "wq_b.weight"]
        names += [a + "wkv_a.weight", a + "kv_norm.weight", a + "wkv_b.weight", a + "wo.weight"]
        names += [f"layers.{i}.attention_norm.weight", f"layers.{i}.ffn_norm.weight"]
        if i < cfg["n_dense_layers"]:
            names += [f"layers.{i}.feed_forward.{w}.weight" for w in ("w1", "w2", "w3")]
        else:
            m = f"layers.{i}.moe."
            names += [m + "experts.w1", m + "experts.w2", m + "experts.w3", m + "router.gate.weight"]
            if cfg["num_shared_experts"] > 0:
                names += [m + f"shared_experts.{w}.weight" for w in ("w1", "w2", "w3")]
    return names + ["norm.weight", "output.weight"]


# init_weights' groups, by the name after "layers.{i}.": std 0.02 (cut at +-2 absolute), or
# the layer's depth std 0.02 / sqrt(2 (i + 1)) (cut at +-2)
STD_002 = {"attention.wq.weight", "attention.wq_a.weight", "attention.wq_b.weight",
           "attention.wkv_a.weight", "attention.wkv_b.weight", "feed_forward.w1.weight",
           "moe.experts.w1", "moe.shared_experts.w1.weight"}
STD_DEPTH = {"attention.wo.weight", "feed_forward.w2.weight", "feed_forward.w3.weight",
             "moe.experts.w2", "moe.experts.w3", "moe.router.gate.weight",
             "moe.shared_experts.w2.weight", "moe.shared_experts.w3.weight"}


def init_weights(model, cfg):
    """torchtitan's init rules: embedding N(0, 1); norms 1; output trunc N(0, D^-0.5) cut at
    +-3 sigma; the layers' matrices as STD_002 / STD_DEPTH say. Draws from torch's global RNG
    in parameter order (torchtitan's order differs: the C++ exporter's init is what counts)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "tok_embeddings.weight":
                nn.init.normal_(p, std=1.0)
            elif name == "output.weight":
                std = cfg["dim"] ** -0.5
                nn.init.trunc_normal_(p, mean=0.0, std=std, a=-3 * std, b=3 * std)
            elif name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                _, layer_id, rest = name.split(".", 2)
                if rest in STD_002:
                    nn.init.trunc_normal_(p, mean=0.0, std=0.02)
                elif rest in STD_DEPTH:
                    nn.init.trunc_normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * (int(layer_id) + 1)))
                else:
                    raise AssertionError(f"init_weights: no rule for {name}")


# ------------------------------------------------------------------------------------------
# Training (Llama's step, plus the load-balancing update)


def load_inputs(input_dir):
    # Llama's checks of the folder, with this model's config keys and parameter names.
    return L.load_inputs(input_dir, load_config, parameter_names)


def build_model(cfg, init):
    model = DeepSeekV3(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if tuple(init[name].shape) != tuple(p.shape) or init[name].dtype != torch.float32:
                raise ValueError(f"init.safetensors: {name} must be F32 {list(p.shape)}, "
                                 f"got {init[name].dtype} {list(init[name].shape)}")
            p.copy_(init[name])
    return model


def moe_stack(model, what, E):
    """[L_moe, E] float32 of every MoE layer's buffer `what` (zeros where there is none)."""
    rows = [getattr(m, what) if getattr(m, what) is not None else torch.zeros(E)
            for m in model.moe_layers()]
    return torch.stack(rows).float().clone() if rows else torch.zeros(0, E)


def train(cfg, init, tokens, labels, keep_first=True):
    """Runs cfg['steps'] optimizer steps; returns a dict of golden tensors (and margins)."""
    model = build_model(cfg, init)
    params = dict(model.named_parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]),
                                  eps=cfg["eps"], weight_decay=cfg["weight_decay"], foreach=False)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, L.lr_lambda_factory(cfg))
    E = cfg["num_experts"]
    out = {}
    losses, grad_norms, lrs, margins = [], [], [], []
    for s in range(cfg["steps"]):
        optimizer.zero_grad()
        count = (labels[s] != IGNORE_INDEX).sum()  # the step's valid labels, all microbatches
        step_loss = torch.zeros(())
        margin = float("inf")
        for m in range(cfg["accumulation_steps"]):
            logits = model(tokens[s, m])
            loss = L.cross_entropy_sum(logits, labels[s, m]) / count
            loss.backward()
            step_loss += loss.detach()
            margin = min([margin] + [moe.last_margin for moe in model.moe_layers()])
            if s == 0 and m == 0 and keep_first:
                out["logits"] = logits.detach().clone()
        if s == 0 and keep_first:
            out["loss"] = step_loss.reshape(1).clone()
            out["tokens_per_expert"] = moe_stack(model, "tokens_per_expert", E)
            for name, p in params.items():
                out["grad." + name] = p.grad.detach().clone()
        update_expert_bias(model)  # before clipping and the optimizer: independent of both
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["max_norm"])))
        lrs.append(optimizer.param_groups[0]["lr"])
        losses.append(float(step_loss))
        margins.append(margin)
        optimizer.step()
        scheduler.step()
    out["losses"] = torch.tensor(losses, dtype=torch.float32)
    out["grad_norms"] = torch.tensor(grad_norms, dtype=torch.float32)
    out["lrs"] = torch.tensor(lrs, dtype=torch.float32)
    out["expert_bias"] = moe_stack(model, "expert_bias", E)
    out["routing_margins"] = margins  # not written: printed, to judge how close ties come
    return out


GOLDEN_KEYS = ("logits", "loss", "losses", "grad_norms", "lrs", "tokens_per_expert", "expert_bias")


def command_golden(args):
    L.setup_torch()
    started = time.time()
    cfg, init, tokens, labels = load_inputs(args.input_dir)
    out = train(cfg, init, tokens, labels)
    elapsed = time.time() - started
    os.makedirs(args.output_dir, exist_ok=True)

    # Gradients, in parameter order, packed into files of at most max_file_bytes each.
    grad_files, current = [], []
    for name in parameter_names(cfg):
        item = ("grad." + name, out["grad." + name])
        if L.file_bytes([item]) > args.max_file_bytes:
            raise ValueError(f"grad.{name} alone is over {args.max_file_bytes} bytes: use a smaller model")
        if current and L.file_bytes(current + [item]) > args.max_file_bytes:
            grad_files.append(current)
            current = []
        current.append(item)
    grad_files.append(current)
    grad_file_names = [f"golden_grads_{i}.safetensors" for i in range(len(grad_files))]

    main = [(k, out[k]) for k in GOLDEN_KEYS]
    if L.file_bytes(main) > args.max_file_bytes:
        raise ValueError(f"logits [B, T, V] is over {args.max_file_bytes} bytes: use a smaller batch")
    metadata = {
        "generator": "tools/reference/deepseek_v3_reference.py",
        "torch_version": torch.__version__,
        "config": json.dumps(cfg, sort_keys=True),
        "grad_files": ",".join(grad_file_names),
        "init_fingerprint": json.dumps(L.fingerprint(init)),
        "input_sha256": json.dumps({f: L.sha256(os.path.join(args.input_dir, f)) for f in
                                    ("config.json", "init.safetensors", "batch.safetensors")}),
        "elapsed_s": f"{elapsed:.3f}",
    }
    L.save_safetensors(os.path.join(args.output_dir, "golden.safetensors"), main, metadata)
    for file_name, items in zip(grad_file_names, grad_files):
        L.save_safetensors(os.path.join(args.output_dir, file_name), items,
                           {"generator": metadata["generator"], "torch_version": torch.__version__})
    for s in range(cfg["steps"]):
        print(f"step {s + 1}: loss {out['losses'][s]:.6f}  grad_norm {out['grad_norms'][s]:.6f}  "
              f"lr {out['lrs'][s]:.6g}  routing margin {out['routing_margins'][s]:.3g}")
    print("tokens_per_expert (step 1): " + "; ".join(
        " ".join(str(int(c)) for c in row) for row in out["tokens_per_expert"].tolist()))
    print("expert_bias (after the last step): " + "; ".join(
        " ".join(f"{b:+.4g}" for b in row) for row in out["expert_bias"].tolist()))
    print(f"golden: {args.output_dir}/golden.safetensors + {len(grad_file_names)} grad files; "
          f"training took {elapsed:.2f} s on {torch.get_num_threads()} threads (torch {torch.__version__})")


# ------------------------------------------------------------------------------------------
# Random inputs, for running this script without the C++ exporter

FLAVORS = {
    "tiny": dict(dim=64, n_layers=3, n_dense_layers=1, n_heads=4, vocab_size=2048, inter_dim=128,
                 moe_inter_dim=32, q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16,
                 qk_rope_head_dim=8, v_head_dim=16, norm_eps=1e-5, rope_theta=10000.0,
                 rope_factor=4.0, beta_fast=32, beta_slow=1, original_seq_len=32, mscale=0.7,
                 num_experts=8, num_shared_experts=1, top_k=2, score_func="sigmoid",
                 route_norm=True, route_scale=2.5, score_before_experts=False,
                 n_expert_groups=4, n_limited_groups=2, load_balance_coeff=1e-3),
}
IGNORED_LABELS = 3  # labels set to -100 per microbatch by make-inputs: exercises ignore_index


def command_make_inputs(args):
    L.setup_torch()
    cfg = {"flavor": args.flavor, "seed": args.seed, "source": "deepseek_v3_reference.py make-inputs",
           **FLAVORS[args.flavor]}
    cfg.update(q_lora_rank=args.q_lora_rank, score_func=args.score_func,
               route_norm=not args.no_route_norm, route_scale=args.route_scale,
               score_before_experts=args.score_before_experts,
               n_expert_groups=args.n_expert_groups, n_limited_groups=args.n_limited_groups)
    if args.no_load_balance:
        cfg["load_balance_coeff"] = None
    cfg.update(batch_size=args.batch_size, seq_len=args.seq_len,
               accumulation_steps=args.accumulation_steps, steps=args.steps, lr=1e-3,
               beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, warmup_steps=2,
               decay_ratio=None, decay_type="linear", min_lr_factor=0.0, max_norm=0.5)
    check_model_config(cfg, "make-inputs")
    torch.manual_seed(args.seed)
    model = DeepSeekV3(cfg)
    init_weights(model, cfg)
    init = [(name, p.detach()) for name, p in model.named_parameters()]
    assert [n for n, _ in init] == parameter_names(cfg)
    S, A, B, T = args.steps, args.accumulation_steps, args.batch_size, args.seq_len
    windows = torch.randint(0, cfg["vocab_size"], (S, A, B, T + 1), dtype=torch.int64)
    tokens, labels = windows[..., :-1].clone(), windows[..., 1:].clone()
    for row in labels.view(S * A, B * T):  # keep at least one valid label per microbatch
        row[torch.randperm(B * T)[: min(IGNORED_LABELS, B * T - 1)]] = IGNORE_INDEX
    os.makedirs(args.dir, exist_ok=True)
    with open(os.path.join(args.dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    L.save_safetensors(os.path.join(args.dir, "init.safetensors"), init, {"seed": str(args.seed)})
    L.save_safetensors(os.path.join(args.dir, "batch.safetensors"), [("tokens", tokens), ("labels", labels)])
    print(f"inputs: {args.dir} ({args.flavor}, B={B}, T={T}, steps={S}, accumulation={A}, "
          f"q_lora_rank {cfg['q_lora_rank']}, {cfg['score_func']}, route_norm {cfg['route_norm']}, "
          f"groups {cfg['n_expert_groups']}/{cfg['n_limited_groups']}, "
          f"load_balance_coeff {cfg['load_balance_coeff']})")


# ------------------------------------------------------------------------------------------
# A Hugging Face checkpoint (make-hf): the model in DeepSeek's published format (HF names,
# config.json; with --fp8 DeepSeek's block-wise float8 e4m3 weights), and the logits that
# titan.cpp's import must reproduce from it.

F8_E4M3 = "F8_E4M3"  # safetensors' dtype name of float8 e4m3fn: one byte per element
E4M3_MAX = 448.0
HF_DEFAULT_BLOCK = 128  # DeepSeek V3's published weight_block_size [128, 128]
HF_BIAS_RANGE = 0.05  # make-hf's e_score_correction_bias: uniform in [-0.05, 0.05)

# titan.cpp name -> HF name (torchtitan's deepseek_v3 state-dict adapter): the whole-model
# names, and per layer (after "layers.{i}." <-> "model.layers.{i}."); the routed experts'
# [E, ...] tensors become one 2-D tensor per expert, mlp.experts.{j}.<proj>.weight.
HF_MODEL_NAMES = {"tok_embeddings.weight": "model.embed_tokens.weight",
                  "norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
HF_LAYER_NAMES = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wq_a.weight": "self_attn.q_a_proj.weight",
    "attention.q_norm.weight": "self_attn.q_a_layernorm.weight",
    "attention.wq_b.weight": "self_attn.q_b_proj.weight",
    "attention.wkv_a.weight": "self_attn.kv_a_proj_with_mqa.weight",
    "attention.kv_norm.weight": "self_attn.kv_a_layernorm.weight",
    "attention.wkv_b.weight": "self_attn.kv_b_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "moe.router.gate.weight": "mlp.gate.weight",
    "moe.expert_bias": "mlp.gate.e_score_correction_bias",
    "moe.shared_experts.w1.weight": "mlp.shared_experts.gate_proj.weight",
    "moe.shared_experts.w3.weight": "mlp.shared_experts.up_proj.weight",
    "moe.shared_experts.w2.weight": "mlp.shared_experts.down_proj.weight",
}
HF_EXPERT_NAMES = {"moe.experts.w1": "gate_proj", "moe.experts.w3": "up_proj", "moe.experts.w2": "down_proj"}
HF_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")
HF_EXPERT_RE = re.compile(r"mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight")


def titan_names(cfg):
    """The titan.cpp-side state: every parameter, then each MoE layer's expert_bias buffer."""
    return parameter_names(cfg) + [f"layers.{i}.moe.expert_bias"
                                   for i in range(cfg["n_dense_layers"], cfg["n_layers"])]


def hf_state(cfg, state):
    """titan.cpp-side state (name -> tensor, titan_names) -> [(HF name, tensor)], in the
    titan order (each layer's experts j = 0 .. E-1 by projection, as the stack splits)."""
    out = []
    for name in titan_names(cfg):
        t = state[name]
        if name in HF_MODEL_NAMES:
            out.append((HF_MODEL_NAMES[name], t))
            continue
        _, i, rest = name.split(".", 2)
        if rest in HF_EXPERT_NAMES:
            out += [(f"model.layers.{i}.mlp.experts.{j}.{HF_EXPERT_NAMES[rest]}.weight", t[j])
                    for j in range(t.shape[0])]
        else:
            out.append((f"model.layers.{i}.{HF_LAYER_NAMES[rest]}", t))
    return out


def titan_state_from_hf(cfg, hf):
    """The mapping back: HF name -> tensor (no _scale_inv) -> the titan.cpp-side state,
    the experts stacked. Refuses unknown, missing and misshapen names."""
    model_back = {v: k for k, v in HF_MODEL_NAMES.items()}
    layer_back = {v: k for k, v in HF_LAYER_NAMES.items()}
    expert_back = {v: k for k, v in HF_EXPERT_NAMES.items()}
    state, experts = {}, {}
    for name, t in hf.items():
        m = HF_LAYER_RE.fullmatch(name)
        if name in model_back:
            state[model_back[name]] = t
        elif m and HF_EXPERT_RE.fullmatch(m.group(2)):
            j, proj = HF_EXPERT_RE.fullmatch(m.group(2)).groups()
            experts.setdefault(f"layers.{m.group(1)}.{expert_back[proj]}", {})[int(j)] = t
        elif m and m.group(2) in layer_back:
            state[f"layers.{m.group(1)}.{layer_back[m.group(2)]}"] = t
        else:
            raise ValueError(f"HF tensor {name}: not a DeepSeek V3 name this model has")
    for name, per_expert in experts.items():
        if sorted(per_expert) != list(range(cfg["num_experts"])):
            raise ValueError(f"{name}: experts {sorted(per_expert)}, expected 0 .. {cfg['num_experts'] - 1}")
        state[name] = torch.stack([per_expert[j] for j in range(cfg["num_experts"])])
    names = titan_names(cfg)
    if set(state) != set(names):
        raise ValueError(f"HF tensors: missing {sorted(set(names) - set(state))}, "
                         f"unexpected {sorted(set(state) - set(names))}")
    return state


def hf_config(cfg, fp8, block):
    """The model's config.json as HF's DeepseekV3Config (DeepSeek's published keys)."""
    c = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": cfg["vocab_size"], "hidden_size": cfg["dim"],
        "intermediate_size": cfg["inter_dim"], "moe_intermediate_size": cfg["moe_inter_dim"],
        "num_hidden_layers": cfg["n_layers"], "num_attention_heads": cfg["n_heads"],
        "num_key_value_heads": cfg["n_heads"], "n_shared_experts": cfg["num_shared_experts"],
        "n_routed_experts": cfg["num_experts"], "routed_scaling_factor": cfg["route_scale"],
        "kv_lora_rank": cfg["kv_lora_rank"], "q_lora_rank": cfg["q_lora_rank"] or None,
        "qk_rope_head_dim": cfg["qk_rope_head_dim"], "v_head_dim": cfg["v_head_dim"],
        "qk_nope_head_dim": cfg["qk_nope_head_dim"], "topk_method": "noaux_tc",
        "n_group": cfg["n_expert_groups"], "topk_group": cfg["n_limited_groups"],
        "num_experts_per_tok": cfg["top_k"], "first_k_dense_replace": cfg["n_dense_layers"],
        "moe_layer_freq": 1, "norm_topk_prob": cfg["route_norm"], "scoring_func": cfg["score_func"],
        "hidden_act": "silu", "attention_bias": False, "num_nextn_predict_layers": 0,
        "rms_norm_eps": cfg["norm_eps"], "rope_theta": cfg["rope_theta"],
        "max_position_embeddings": int(round(cfg["original_seq_len"] * cfg["rope_factor"])),
        "rope_scaling": {"type": "yarn", "factor": cfg["rope_factor"],
                         "original_max_position_embeddings": cfg["original_seq_len"],
                         "beta_fast": cfg["beta_fast"], "beta_slow": cfg["beta_slow"],
                         "mscale": cfg["mscale"], "mscale_all_dim": cfg["mscale"]},
        "tie_word_embeddings": False, "torch_dtype": "bfloat16" if fp8 else "float32",
    }
    if fp8:
        c["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                    "weight_block_size": [block, block]}
    return c


def titan_config_from_hf(c, seq_len, load_balance_coeff):
    """config.json -> the titan.cpp-side model keys (the import's reading; HF has no
    score_before_experts (false) nor a training coefficient for the bias)."""
    rs = c["rope_scaling"]
    if c["model_type"] != "deepseek_v3" or rs["type"] != "yarn" or rs["mscale"] != rs["mscale_all_dim"]:
        raise ValueError("config.json: not a deepseek_v3 with yarn rope_scaling and mscale == mscale_all_dim")
    cfg = dict(dim=c["hidden_size"], n_layers=c["num_hidden_layers"], n_dense_layers=c["first_k_dense_replace"],
               n_heads=c["num_attention_heads"], vocab_size=c["vocab_size"], inter_dim=c["intermediate_size"],
               moe_inter_dim=c["moe_intermediate_size"], q_lora_rank=c["q_lora_rank"] or 0,
               kv_lora_rank=c["kv_lora_rank"], qk_nope_head_dim=c["qk_nope_head_dim"],
               qk_rope_head_dim=c["qk_rope_head_dim"], v_head_dim=c["v_head_dim"], norm_eps=c["rms_norm_eps"],
               rope_theta=c["rope_theta"], rope_factor=rs["factor"], beta_fast=rs["beta_fast"],
               beta_slow=rs["beta_slow"], original_seq_len=rs["original_max_position_embeddings"],
               mscale=rs["mscale"], num_experts=c["n_routed_experts"], num_shared_experts=c["n_shared_experts"],
               top_k=c["num_experts_per_tok"], score_func=c["scoring_func"], route_norm=c["norm_topk_prob"],
               route_scale=c["routed_scaling_factor"], score_before_experts=False,
               n_expert_groups=c["n_group"], n_limited_groups=c["topk_group"],
               load_balance_coeff=load_balance_coeff, seq_len=seq_len)
    check_model_config(cfg, "config.json")
    return cfg


# float8 e4m3fn bit patterns: sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent field
# 0 is subnormal (mantissa * 2^-9); no infinities; S.1111.111 (0x7F, 0xFF) is NaN.


def e4m3_decode_table():
    """float64 [256]: the value of each bit pattern, decoded field by field (NaN: 0x7F, 0xFF)."""
    values = []
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        field, mant = (code >> 3) & 0xF, code & 0x7
        if field == 0xF and mant == 0x7:
            values.append(float("nan"))
        elif field == 0:
            values.append(sign * mant * 2.0 ** -9)
        else:
            values.append(sign * (1 + mant / 8) * 2.0 ** (field - 7))
    return torch.tensor(values, dtype=torch.float64)


def e4m3_encode(q):
    """Values of e4m3fn (any float dtype; round_to_fp8's results) -> their bit patterns, uint8;
    -0 keeps its sign bit. Refuses a value the format does not hold."""
    q = q.double()
    a = q.abs()
    _, e = torch.frexp(a)
    e = e.long() - 1  # a = 1.m 2^e for a normal
    normal = a >= 2.0 ** -6
    field = torch.where(normal, e + 7, torch.zeros_like(e))
    mant = torch.where(normal, a * L.exp2_exact(3 - e) - 8, a * 2.0 ** 9)
    ok = ((mant == mant.round()) & (mant >= 0) & (mant < 8) & (field <= 15)
          & ~((field == 15) & (mant == 7)))
    if not bool(ok.all()):
        raise ValueError(f"e4m3_encode: {q[~ok][:4].tolist()} are not e4m3fn values")
    return ((torch.signbit(q).long() << 7) | (field << 3) | mant.long()).to(torch.uint8)


def expand_blocks(s, block, rows, cols):
    """Block scales [ceil(rows/B), ceil(cols/B)] -> one per element [rows, cols]."""
    r = torch.div(torch.arange(rows), block, rounding_mode="floor")
    c = torch.div(torch.arange(cols), block, rounding_mode="floor")
    return s.index_select(0, r).index_select(1, c)


def fp8_block_quantize(w, block):
    """DeepSeek's block-wise weight quantization of w [rows, cols] (float32): per BxB block
    (edge blocks smaller), s = amax |block| / 448 in float32 (1 when amax is 0), q =
    round_to_fp8(float32(w / s)) (nearest, ties to even). -> (q float64 [rows, cols],
    codes uint8 [rows, cols], scale_inv = s float32 [ceil(rows/B), ceil(cols/B)])."""
    rows, cols = w.shape
    nr, nc = -(-rows // block), -(-cols // block)
    padded = torch.zeros(nr * block, nc * block)
    padded[:rows, :cols] = w.abs()
    amax = padded.view(nr, block, nc, block).amax(dim=(1, 3))
    s = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    q = L.round_to_fp8(w.float() / expand_blocks(s, block, rows, cols), L.E4M3)
    return q, e4m3_encode(q), s


def hf_fp8_quantized(name, t):
    """Whether DeepSeek stores this HF tensor in float8: the 2-D linear weights inside the
    layers, except the router (mlp.gate.weight). Embeddings, lm_head, norms stay BF16."""
    return name.startswith("model.layers.") and t.dim() == 2 and not name.endswith(".mlp.gate.weight")


def save_safetensors_typed(path, items, metadata=None):
    """items: [(name, tensor, dtype name)]; as L.save_safetensors, plus F8_E4M3 (uint8 bytes)."""
    header = {"__metadata__": {"format": "pt", **(metadata or {})}}
    blobs, offset = [], 0
    for name, t, dtype in items:
        t = t.detach().contiguous()
        want = torch.uint8 if dtype == F8_E4M3 else L.DTYPES[dtype]
        if t.dtype != want:
            raise ValueError(f"{path}: {name} is {t.dtype}, {dtype} needs {want}")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for raw in blobs:
            f.write(raw)
    os.replace(path + ".tmp", path)


def load_safetensors_typed(path):
    """-> ({name: tensor}, {name: dtype name}, metadata); F8_E4M3 comes back as uint8 bytes."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    body = memoryview(data)[8 + n:]
    tensors, dtypes, spans = {}, {}, []
    for name, e in header.items():
        dtype = torch.uint8 if e["dtype"] == F8_E4M3 else L.DTYPES[e["dtype"]]
        begin, end = e["data_offsets"]
        if end - begin != math.prod(e["shape"]) * torch.tensor([], dtype=dtype).element_size():
            raise ValueError(f"{path}: tensor {name}: data_offsets do not match its shape")
        tensors[name] = (torch.frombuffer(bytearray(body[begin:end]), dtype=dtype).reshape(e["shape"])
                         if end > begin else torch.empty(e["shape"], dtype=dtype))
        dtypes[name] = e["dtype"]
        spans.append((begin, end))
    expected = 0
    for begin, end in sorted(spans):
        if begin != expected:
            raise ValueError(f"{path}: a tensor starts at {begin}, expected {expected}")
        expected = end
    if expected != len(body):
        raise ValueError(f"{path}: tensors end at {expected}, data holds {len(body)} bytes")
    return tensors, dtypes, metadata


def make_hf_config(flavor, q_lora_rank, batch_size, seq_len, seed):
    """The titan.cpp-side config of make-hf's model: the flavor's model keys (with its
    load_balance_coeff, so that the model has an expert_bias) plus B and T."""
    cfg = {"flavor": flavor, "seed": seed, "source": "deepseek_v3_reference.py make-hf",
           **FLAVORS[flavor], "batch_size": batch_size, "seq_len": seq_len}
    if q_lora_rank is not None:
        cfg["q_lora_rank"] = q_lora_rank
    check_model_config(cfg, "make-hf")
    return cfg


def make_hf_weights(cfg):
    """The float32 model as drawn: torch.manual_seed(seed), make-inputs' init, then each MoE
    layer's expert_bias uniform in +-HF_BIAS_RANGE, then tokens [B, T] in [0, V)."""
    torch.manual_seed(cfg["seed"])
    model = DeepSeekV3(cfg)
    init_weights(model, cfg)
    state = {name: p.detach().clone() for name, p in model.named_parameters()}
    for i in range(cfg["n_dense_layers"], cfg["n_layers"]):
        state[f"layers.{i}.moe.expert_bias"] = (torch.rand(cfg["num_experts"]) * 2 - 1) * HF_BIAS_RANGE
    tokens = torch.randint(0, cfg["vocab_size"], (cfg["batch_size"], cfg["seq_len"]), dtype=torch.int64)
    return state, tokens


def reference_logits(cfg, state, tokens):
    """The golden mode's forward in float32 on a titan.cpp-side state (parameters and the
    expert_bias buffers). -> (logits [B, T, V], routing margin: the smallest gap between a
    kept and a dropped group or expert choice over tokens and MoE layers)."""
    model = DeepSeekV3(cfg)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + [
                (f"layers.{i}.moe.expert_bias", m.expert_bias)
                for i, m in zip(range(cfg["n_dense_layers"], cfg["n_layers"]), model.moe_layers())]:
            if tuple(state[name].shape) != tuple(t.shape) or state[name].dtype != torch.float32:
                raise ValueError(f"{name}: must be F32 {list(t.shape)}, got {state[name].dtype} "
                                 f"{list(state[name].shape)}")
            t.copy_(state[name])
        logits = model(tokens)
    return logits, min(moe.last_margin for moe in model.moe_layers())


def command_make_hf(args):
    L.setup_torch()
    started = time.time()
    out_dir = os.path.abspath(args.out_dir)
    reference = os.path.abspath(args.reference or os.path.join(os.path.dirname(out_dir), "reference.safetensors"))
    if os.path.dirname(reference) == out_dir or reference.startswith(out_dir + os.sep):
        raise SystemExit(f"make-hf: --reference {reference} lies inside OUT_DIR (the HF folder holds the model only)")
    if args.block is not None and not args.fp8:
        raise SystemExit("make-hf: --block is the fp8 block size: it needs --fp8")
    block = args.block or HF_DEFAULT_BLOCK
    if block < 1:
        raise SystemExit("make-hf: --block must be >= 1")
    cfg = make_hf_config(args.flavor, args.q_lora_rank, args.batch_size, args.seq_len, args.seed)
    state, tokens = make_hf_weights(cfg)

    # What the import sees: the dequantized fp8 values (q * scale_inv in float32), bf16
    # widened to float32, the F32 bias; without --fp8 the float32 weights themselves.
    items, seen = [], {}
    counts = {}
    for name, w in hf_state(cfg, state):
        if not args.fp8:
            items.append((name, w, "F32"))
            seen[name] = w
        elif hf_fp8_quantized(name, w):
            q, codes, s = fp8_block_quantize(w, block)
            items += [(name, codes, F8_E4M3), (name + "_scale_inv", s, "F32")]
            seen[name] = q.float() * expand_blocks(s, block, *w.shape)
        elif name.endswith(".e_score_correction_bias"):
            items.append((name, w, "F32"))
            seen[name] = w
        else:
            items.append((name, w.bfloat16(), "BF16"))
            seen[name] = w.bfloat16().float()
    for _, _, dtype in items:
        counts[dtype] = counts.get(dtype, 0) + 1
    logits, margin = reference_logits(cfg, titan_state_from_hf(cfg, seen), tokens)

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(cfg, args.fp8, block), f, indent=2)
        f.write("\n")
    model_path = os.path.join(out_dir, "model.safetensors")
    save_safetensors_typed(model_path, items)
    os.makedirs(os.path.dirname(reference), exist_ok=True)
    max_abs = float(logits.abs().max())
    metadata = {
        "generator": "tools/reference/deepseek_v3_reference.py make-hf",
        "torch_version": torch.__version__,
        "config": json.dumps(cfg, sort_keys=True),
        "fp8": json.dumps(args.fp8),
        "weight_block_size": json.dumps([block, block] if args.fp8 else None),
        "max_abs_logit": repr(max_abs),
        "routing_margin": repr(margin),
        "model_sha256": L.sha256(model_path),
    }
    L.save_safetensors(reference, [("tokens", tokens), ("logits", logits)], metadata)
    elapsed = time.time() - started
    print(f"make-hf: {out_dir}/config.json, model.safetensors ({len(items)} tensors: "
          + ", ".join(f"{n} {d}" for d, n in sorted(counts.items()))
          + f"{f', block {block}' if args.fp8 else ''}); {reference}: tokens {list(tokens.shape)}, "
          f"logits {list(logits.shape)}, max |logit| {max_abs:.4f}, routing margin {margin:.3g}; "
          f"{elapsed:.2f} s")


# ------------------------------------------------------------------------------------------
# Self-test: each piece against a naive version of itself


def naive_frequencies(cfg):
    """YaRN frequencies by hand, Python floats (float64)."""
    rope, theta = cfg["qk_rope_head_dim"], cfg["rope_theta"]
    f = [1.0 / theta ** (2 * j / rope) for j in range(rope // 2)]
    if cfg["seq_len"] <= cfg["original_seq_len"]:
        return f
    cd = lambda r: rope * math.log(cfg["original_seq_len"] / (r * 2 * math.pi)) / (2 * math.log(theta))
    low, high = max(math.floor(cd(cfg["beta_fast"])), 0), min(math.ceil(cd(cfg["beta_slow"])), rope - 1)
    if low == high:
        high += 0.001
    out = []
    for j, fj in enumerate(f):
        ramp = min(max((j - low) / (high - low), 0.0), 1.0)
        out.append(fj / cfg["rope_factor"] * ramp + fj * (1 - ramp))
    return out


def naive_rms(x, w, eps):
    return x / torch.sqrt((x * x).mean() + eps) * w


def naive_rotate(vec, t, freqs):
    out = vec.clone()
    for j, f in enumerate(freqs):
        a, b, c, s = vec[2 * j].item(), vec[2 * j + 1].item(), math.cos(t * f), math.sin(t * f)
        out[2 * j], out[2 * j + 1] = a * c - b * s, a * s + b * c
    return out


def naive_mla(p, x, cfg):
    """MLA by a loop over (b, t, h) on float64 vectors; p: the module's weights by name."""
    B, T, D = x.shape
    H, nope, rope, vd, r = (cfg["n_heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"],
                            cfg["v_head_dim"], cfg["kv_lora_rank"])
    freqs = naive_frequencies(cfg)
    scale = 1 / math.sqrt(nope + rope)
    if cfg["seq_len"] > cfg["original_seq_len"]:
        scale *= (0.1 * cfg["mscale"] * math.log(cfg["rope_factor"]) + 1) ** 2
    out = torch.zeros(B, T, D, dtype=torch.float64)
    for b in range(B):
        keys, values = [], []
        for t in range(T):
            xt = x[b, t]
            if cfg["q_lora_rank"] == 0:
                q = p["wq.weight"] @ xt
            else:
                q = p["wq_b.weight"] @ naive_rms(p["wq_a.weight"] @ xt, p["q_norm.weight"], cfg["norm_eps"])
            q = q.view(H, nope + rope)
            kv = p["wkv_a.weight"] @ xt
            k_pe = naive_rotate(kv[r:], t, freqs)
            kvb = (p["wkv_b.weight"] @ naive_rms(kv[:r], p["kv_norm.weight"], cfg["norm_eps"])).view(H, nope + vd)
            keys.append([torch.cat([kvb[h, :nope], k_pe]) for h in range(H)])
            values.append([kvb[h, nope:] for h in range(H)])
            heads = []
            for h in range(H):
                qh = torch.cat([q[h, :nope], naive_rotate(q[h, nope:], t, freqs)])
                s = [float(qh @ keys[u][h]) * scale for u in range(t + 1)]
                m = max(s)
                e = [math.exp(z - m) for z in s]
                heads.append(sum(e[u] / sum(e) * values[u][h] for u in range(t + 1)))
            out[b, t] = p["wo.weight"] @ torch.cat(heads)
    return out


def naive_route(logits_row, bias, cfg):
    """One token's routing with Python lists: (picks, weights)."""
    E = len(logits_row)
    if cfg["score_func"] == "sigmoid":
        scores = [1 / (1 + math.exp(-z)) for z in logits_row]
    else:
        m = max(logits_row)
        e = [math.exp(z - m) for z in logits_row]
        scores = [v / sum(e) for v in e]
    choice = [s + (bias[i] if bias is not None else 0.0) for i, s in enumerate(scores)]
    candidates = range(E)
    G = cfg["n_expert_groups"]
    if G > 1:
        size = E // G
        group_score = [sum(sorted(choice[g * size:(g + 1) * size], reverse=True)[:2]) for g in range(G)]
        kept = sorted(range(G), key=lambda g: (-group_score[g], g))[: cfg["n_limited_groups"]]
        candidates = [i for i in range(E) if i // size in kept]
    picks = sorted(candidates, key=lambda i: (-choice[i], i))[: cfg["top_k"]]
    w = [scores[i] for i in picks]
    if cfg["route_norm"]:
        total = sum(w) + ROUTE_NORM_EPS
        w = [v / total for v in w]
    return picks, [v * cfg["route_scale"] for v in w]


def naive_moe(moe, x, cfg):
    """x [N, D] float64 -> the MoE output by a loop over tokens and picks."""
    w1, w2, w3 = (getattr(moe.experts, w).detach() for w in ("w1", "w2", "w3"))
    gate = moe.router.gate.weight.detach()
    bias = None if moe.expert_bias is None else moe.expert_bias.tolist()
    swiglu = lambda a, b, c, v: a @ (F.silu(b @ v) * (c @ v))
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        xn = x[n]
        if moe.shared_experts is not None:
            sh = moe.shared_experts
            out[n] += swiglu(sh.w2.weight.detach(), sh.w1.weight.detach(), sh.w3.weight.detach(), xn)
        picks, weights = naive_route((gate @ xn).tolist(), bias, cfg)
        for e, s in zip(picks, weights):
            if cfg["score_before_experts"]:
                out[n] += swiglu(w2[e], w1[e], w3[e], s * xn)
            else:
                out[n] += s * swiglu(w2[e], w1[e], w3[e], xn)
    return out


def small_config(**overrides):
    """A small model for the self-test: T 6 > original_seq_len 4 (YaRN and mscale on, and
    YaRN's low == high case), 1 dense + 2 MoE layers, 8 experts in 4 groups."""
    cfg = dict(FLAVORS["tiny"], dim=16, n_layers=3, n_dense_layers=1, n_heads=2, vocab_size=23,
               inter_dim=24, moe_inter_dim=8, q_lora_rank=8, kv_lora_rank=8, qk_nope_head_dim=4,
               qk_rope_head_dim=4, v_head_dim=6, original_seq_len=4, seq_len=6)
    cfg.update(overrides)
    return cfg


def command_check(args):
    L.setup_torch()
    torch.manual_seed(1)
    failures = []

    def report(ok, what):
        print(f"  {'ok' if ok else 'FAIL':4} {what}")
        if not ok:
            failures.append(what)

    def expect_close(what, got, want, tol):
        err = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
        report(err <= tol, f"{what}: max abs diff {err:.3g} (tolerance {tol:g})")

    # YaRN frequencies vs scalar Python, float32 against float64 (relative): the tiny flavor
    # (rope 8: the ramp is a step), DeepSeek V3's own (rope 64, 4096 -> a long ramp), and the
    # low == high case (high nudged by 0.001); without YaRN, exactly the plain frequencies.
    yarn = dict(rope_theta=10000.0, rope_factor=4.0, beta_fast=32, beta_slow=1)
    cases = [("tiny, T 64 > 32", dict(yarn, qk_rope_head_dim=8, original_seq_len=32, seq_len=64)),
             ("V3, rope 64, factor 40, T 8192 > 4096",
              dict(yarn, qk_rope_head_dim=64, rope_factor=40.0, original_seq_len=4096, seq_len=8192)),
             ("rope 4, T 6 > 4 (low == high)", dict(yarn, qk_rope_head_dim=4, original_seq_len=4, seq_len=6))]
    for what, c in cases:
        got = rope_frequencies(c)
        want = torch.tensor(naive_frequencies(c), dtype=torch.float64)
        low, high = yarn_correction_range(c)
        expect_close(f"yarn frequencies vs scalar ({what}; ramp {low}..{high})", got / want,
                     torch.ones(len(want)), 1e-6)
    c = dict(yarn, qk_rope_head_dim=8, original_seq_len=64, seq_len=64)
    plain = 1.0 / (10000.0 ** (torch.arange(0, 8, 2, dtype=torch.float32) / 8))
    report(torch.equal(rope_frequencies(c), plain), "no YaRN when seq_len <= original_seq_len: "
                                                    "exactly the plain frequencies")
    scaled = FLAVORS["tiny"]
    m = 0.1 * 0.7 * math.log(4.0) + 1
    report(abs(softmax_scale(dict(scaled, seq_len=64)) - 24 ** -0.5 * m * m) < 1e-15
           and softmax_scale(dict(scaled, seq_len=32)) == 24 ** -0.5,
           f"softmax scale: qk^-0.5 times mscale^2 = {m * m:.6f} only when T > original_seq_len")

    # MLA vs a loop over (b, t, h) in float64, with and without the q bottleneck.
    for q_rank in (8, 0):
        cfg = small_config(q_lora_rank=q_rank)
        mla = MLA(cfg).double()
        with torch.no_grad():
            for name, p in mla.named_parameters():
                p.copy_(torch.randn_like(p) * (0.3 if "norm" not in name else 1.0) + ("norm" in name))
        x = torch.randn(2, 6, cfg["dim"], dtype=torch.float64)
        got = mla(x, rope_table(cfg)).detach()
        want = naive_mla({k: v.detach() for k, v in mla.named_parameters()}, x, cfg)
        expect_close(f"MLA vs per-head loop (q_lora_rank {q_rank}, YaRN + mscale, float64)", got, want, 1e-6)

    # Router: hand examples, then random logits against the per-token loop.
    sel, _ = select_experts(torch.tensor([[0.9, 0.0, 0.6, 0.6, 0.5, 0.5, 0.1, 0.1]]), 2, 4, 2)
    plain, _ = select_experts(torch.tensor([[0.9, 0.0, 0.6, 0.6, 0.5, 0.5, 0.1, 0.1]]), 2, 1, 1)
    report(sel.tolist() == [[2, 3]] and plain.tolist() == [[0, 2]],
           f"group-limited top-2: groups 1, 2 kept (sums 1.2, 1.0 beat 0.9) -> {sel.tolist()[0]}, "
           f"the plain top-2 {plain.tolist()[0]} picks expert 0 of the dropped group 0")
    flat = torch.full((3, 8), 0.25)
    flat[1, 3] = 0.5  # group 1 first, then groups 0, 2, 3 tie: 0 wins
    flat[2] = torch.tensor([0.5, 0.7, 0.7, 0.1, 0.7, 0.0, 0.3, 0.3])
    got = [select_experts(flat, 3, 4, 2)[0].tolist(), select_experts(flat, 3, 1, 1)[0].tolist()]
    want = [[[0, 1, 2], [3, 0, 1], [1, 2, 0]], [[0, 1, 2], [3, 0, 1], [1, 2, 4]]]
    report(got == want, f"ties by lower index (groups and experts): all-equal -> 0 1 2; {got}")
    logits = torch.tensor([[0.0, 2.0, 2.0, -1.0, 0.0, 0.0, 0.0, 0.0]])
    hand = dict(score_func="sigmoid", top_k=2, n_expert_groups=1, n_limited_groups=1,
                route_norm=True, route_scale=2.5)
    sel, w, _ = route(logits, None, hand)
    sel2, w2, _ = route(logits, None, dict(hand, route_norm=False))
    s2 = 1 / (1 + math.exp(-2.0))
    report(sel.tolist() == [[1, 2]] and torch.allclose(w, torch.tensor([[1.25, 1.25]]), rtol=0, atol=1e-6)
           and torch.allclose(w2, torch.tensor([[2.5 * s2, 2.5 * s2]]), rtol=0, atol=1e-6),
           f"route_norm / route_scale: equal picks weigh 2.5 / 2 = 1.25 each; without the norm "
           f"2.5 sigmoid(2) = {2.5 * s2:.6f}")
    bias = torch.zeros(8)
    bias[7] = 10.0  # chosen by the bias, weighed by its score only
    sel, w, _ = route(logits, bias, dict(hand, route_norm=False, route_scale=1.0))
    report(sel.tolist() == [[7, 1]] and abs(w[0, 0].item() - 0.5) < 1e-7,
           "the bias chooses but does not weigh: bias 10 on expert 7 picks it with weight sigmoid(0)")
    bad = 0
    for score_func in SCORE_FUNCS:
        for groups, limited in ((1, 1), (4, 2), (4, 1)):
            for norm in (True, False):
                cfg = dict(score_func=score_func, top_k=2 if limited > 1 else 1, n_expert_groups=groups,
                           n_limited_groups=limited, route_norm=norm, route_scale=1.7)
                lg = torch.randn(40, 8, dtype=torch.float64)
                b = torch.randn(8, dtype=torch.float64) * 0.05
                sel, w, _ = route(lg, b, cfg)
                for n in range(40):
                    picks, weights = naive_route(lg[n].tolist(), b.tolist(), cfg)
                    bad += int(sel[n].tolist() != picks or bool(
                        (w[n] - torch.tensor(weights, dtype=torch.float64)).abs().max() > 1e-12))
    report(bad == 0, f"router vs per-token loop: sigmoid/softmax x groups 1, 4/2, 4/1 x route_norm, "
                     f"random bias, 40 tokens each, float64 ({bad} tokens differ)")

    # MoE forward vs a loop over tokens and picks, float64, scores after or before experts.
    for before, shared in ((False, 1), (True, 2), (False, 0)):
        cfg = small_config(score_before_experts=before, num_shared_experts=shared)
        moe = MoE(cfg).double()
        with torch.no_grad():
            for p in moe.parameters():
                p.copy_(torch.randn_like(p) * 0.5)
            moe.expert_bias.copy_(torch.randn(8) * 0.05)
        x = torch.randn(12, cfg["dim"], dtype=torch.float64)
        got = moe(x).detach()
        counts = torch.bincount(moe.last_selected.flatten(), minlength=8).double()
        expect_close(f"MoE vs per-token loop (score_before_experts {before}, {shared} shared, float64)",
                     got, naive_moe(moe, x, cfg), 1e-12)
        report(torch.equal(moe.tokens_per_expert, counts) and int(counts.sum()) == 12 * 2,
               f"tokens_per_expert counts the (token, pick) pairs: {counts.long().tolist()}")

    # Load balancing on hand examples: counts [3, 1, 2, 2], coeff 0.1 -> [-0.1, 0.1, 0, 0]
    # exactly; [4, 1, 1, 2] -> delta [-0.1, 0.1, 0.1, 0] - 0.025; then through a model: the
    # bias accumulates and the counts restart at 0.
    d1 = load_balance_delta(torch.tensor([3.0, 1.0, 2.0, 2.0]), 0.1)
    d2 = load_balance_delta(torch.tensor([4.0, 1.0, 1.0, 2.0]), 0.1)
    report(torch.equal(d1, torch.tensor([-0.1, 0.1, 0.0, 0.0])), f"bias update [3 1 2 2], 0.1 -> "
                                                                 f"{d1.tolist()} (exact)")
    expect_close("bias update [4 1 1 2], 0.1 -> [-0.125 0.075 0.075 -0.025]", d2,
                 torch.tensor([-0.125, 0.075, 0.075, -0.025], dtype=torch.float64), 1e-8)
    cfg = small_config(num_experts=4, n_expert_groups=1, top_k=1, load_balance_coeff=0.1)
    model = DeepSeekV3(cfg)
    moes = model.moe_layers()
    for counts in ([3.0, 1.0, 2.0, 2.0], [4.0, 1.0, 1.0, 2.0]):
        for moe in moes:
            moe.tokens_per_expert.copy_(torch.tensor(counts))
        update_expert_bias(model)
    report(all(torch.allclose(moe.expert_bias, d1 + d2, rtol=0, atol=1e-8)
               and not moe.tokens_per_expert.any() for moe in moes),
           f"update_expert_bias: each MoE layer's bias accumulates ({(d1 + d2).tolist()}), counts reset")

    # Model gradients vs central differences in float64, on two configurations; the routing
    # must not flip under the perturbation (selections compared at +-FD_STEP). Relative
    # error with a floor of 1e-3; a step of 1e-5 measured ~5e-8 (1e-6: ~5e-7, roundoff).
    grad_configs = [
        ("q_lora_rank 8, sigmoid, route_norm, groups 4/2, bias", small_config()),
        ("q_lora_rank 0, softmax, score_before_experts, no norm, no bias, no shared, all MoE",
         small_config(q_lora_rank=0, score_func="softmax", score_before_experts=True, route_norm=False,
                      route_scale=1.5, n_expert_groups=1, load_balance_coeff=None,
                      num_shared_experts=0, n_dense_layers=0)),
    ]
    for what, cfg in grad_configs:
        model = DeepSeekV3(cfg).double()
        init_weights(model, cfg)
        assert [n for n, _ in model.named_parameters()] == parameter_names(cfg)
        with torch.no_grad():
            for moe in model.moe_layers():
                if moe.expert_bias is not None:
                    moe.expert_bias.copy_(torch.randn(8) * 0.02)
                moe.router.gate.weight.mul_(20)  # routing that depends on the token
        toks, labs = torch.randint(0, 23, (2, 6)), torch.randint(0, 23, (2, 6))
        labs[0, 1] = IGNORE_INDEX
        count = (labs != IGNORE_INDEX).sum()
        loss_fn = lambda: L.cross_entropy_sum(model(toks), labs) / count
        selections = lambda: [moe.last_selected.clone() for moe in model.moe_layers()]
        model.zero_grad()
        loss_fn().backward()
        base = selections()
        params = dict(model.named_parameters())
        picked = base[0][0, 0].item()  # an expert that token 0 uses in the first MoE layer
        first_moe = cfg["n_dense_layers"]
        analytic, numeric, flipped, names = [], [], 0, []
        for name, p in params.items():
            if name == "tok_embeddings.weight":
                index = (int(toks[0, 3]), 5)
            elif ".experts." in name:
                if not name.startswith(f"layers.{first_moe}."):
                    continue
                index = (picked,) + tuple(torch.randint(0, n, ()).item() for n in p.shape[1:])
            else:
                index = tuple(torch.randint(0, n, ()).item() for n in p.shape)
            names.append(name)
            analytic.append(p.grad[index].item())
            values = []
            with torch.no_grad():
                for step in (FD_STEP, -2 * FD_STEP):
                    p[index] += step
                    values.append(loss_fn().item())
                    flipped += any(not torch.equal(a, b) for a, b in zip(selections(), base))
                p[index] += FD_STEP
            numeric.append((values[0] - values[1]) / (2 * FD_STEP))
        # and all parameters at once, along a random direction
        direction = {n: torch.randn_like(p) for n, p in params.items()}
        analytic.append(sum(float((p.grad * direction[n]).sum()) for n, p in params.items()))
        values = []
        with torch.no_grad():
            for step in (FD_STEP, -2 * FD_STEP):
                for n, p in params.items():
                    p += step * direction[n]
                values.append(loss_fn().item())
                flipped += any(not torch.equal(a, b) for a, b in zip(selections(), base))
            for n, p in params.items():
                p += FD_STEP * direction[n]
        numeric.append((values[0] - values[1]) / (2 * FD_STEP))
        a, n = torch.tensor(analytic, dtype=torch.float64), torch.tensor(numeric, dtype=torch.float64)
        rel = (a - n).abs() / torch.maximum(torch.maximum(a.abs(), n.abs()), torch.tensor(1e-3))
        worst = names[int(rel[:-1].argmax())]
        report(flipped == 0, f"routing unchanged under the perturbations ({what})")
        expect_close(f"gradients vs central differences, {len(names)} parameters + a random "
                     f"direction, relative (worst {worst}; {what})", rel, torch.zeros(len(rel)), 1e-6)

    # Gradient accumulation: 2 microbatches of 1 sequence = 1 microbatch of 2 sequences, in
    # float32 over 3 steps (the load-balancing bias moves between them: tokens_per_expert is
    # the step's sum over its microbatches).
    cfg = small_config(batch_size=2, accumulation_steps=1, steps=3, lr=1e-2, beta1=0.9, beta2=0.95,
                       eps=1e-8, weight_decay=0.1, warmup_steps=1, decay_ratio=None,
                       decay_type="cosine", min_lr_factor=0.1, max_norm=0.5, load_balance_coeff=1e-2)
    model = DeepSeekV3(cfg)
    init_weights(model, cfg)
    init = {k: v.detach().clone() for k, v in model.named_parameters()}
    toks, labs = torch.randint(0, 23, (3, 1, 2, 6)), torch.randint(0, 23, (3, 1, 2, 6))
    labs[0, 0, 0, :4] = IGNORE_INDEX  # unequal valid counts per sequence
    one = train(cfg, init, toks, labs)
    two = train(dict(cfg, batch_size=1, accumulation_steps=2), init, toks.view(3, 2, 1, 6), labs.view(3, 2, 1, 6))
    expect_close("accumulation 2 x B1 = 1 x B2: losses", two["losses"], one["losses"], 1e-5)
    expect_close("accumulation 2 x B1 = 1 x B2: step-1 grads",
                 torch.cat([two[k].flatten() for k in one if k.startswith("grad.")]),
                 torch.cat([one[k].flatten() for k in one if k.startswith("grad.")]), 1e-6)
    report(torch.equal(two["tokens_per_expert"], one["tokens_per_expert"])
           and torch.equal(two["expert_bias"], one["expert_bias"]) and bool(one["expert_bias"].any()),
           f"accumulation: tokens_per_expert summed over microbatches "
           f"({one['tokens_per_expert'][0].long().tolist()}), the same expert_bias after 3 steps")

    # A config with an unknown key is refused.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.json")
        with open(path, "w") as f:
            json.dump(dict(cfg, n_kv_heads=2), f)
        try:
            load_config(path)
            refused = False
        except ValueError:
            refused = True
        report(refused, "config.json with an unknown key (n_kv_heads) is refused")

    # make-inputs then golden, end to end, and the files load back.
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = os.path.join(tmp, "in"), os.path.join(tmp, "out")
        parser = build_parser()
        command_make_inputs(parser.parse_args(["make-inputs", inputs, "--steps", "2"]))
        command_golden(parser.parse_args(["golden", inputs, outputs]))
        golden, meta = L.load_safetensors(os.path.join(outputs, "golden.safetensors"))
        cfg = json.loads(meta["config"])
        grads = {}
        for name in meta["grad_files"].split(","):
            grads.update(L.load_safetensors(os.path.join(outputs, name))[0])
            report(os.path.getsize(os.path.join(outputs, name)) < L.MAX_FILE_BYTES, f"{name} < 2 MB")
        n_moe = cfg["n_layers"] - cfg["n_dense_layers"]
        shapes_ok = (set(golden) == set(GOLDEN_KEYS)
                     and list(golden["logits"].shape) == [1, 64, 2048]
                     and list(golden["tokens_per_expert"].shape) == [n_moe, 8]
                     and list(golden["expert_bias"].shape) == [n_moe, 8]
                     and golden["loss"].item() == golden["losses"][0].item()
                     and (golden["tokens_per_expert"].sum(1) == 64 * 2).all().item()
                     and sorted(grads) == sorted("grad." + n for n in parameter_names(cfg)))
        report(shapes_ok, f"make-inputs + golden end to end ({time.time() - started:.1f} s): keys, "
                          f"shapes, loss = losses[0], counts sum to B T K, every gradient")

    # make-hf: the e4m3 bit patterns, DeepSeek's block-wise quantization, and a folder read
    # back as the import reads it.
    table = e4m3_decode_table()
    finite = [c for c in range(256) if c not in (0x7F, 0xFF)]
    spots = {0x00: 0.0, 0x01: 2.0 ** -9, 0x07: 7 * 2.0 ** -9, 0x08: 2.0 ** -6, 0x38: 1.0, 0x3B: 1.375,
             0x7E: 448.0, 0xFE: -448.0, 0xB8: -1.0}
    report(bool(torch.isnan(table[[0x7F, 0xFF]]).all()) and not bool(torch.isnan(table[finite]).any())
           and set(table[finite].tolist()) == set(L.fp8_table(L.E4M3))
           and all(table[c].item() == v for c, v in spots.items())
           and math.copysign(1.0, table[0x80].item()) == -1.0,
           "e4m3 decoder table: the 254 finite patterns are llama3_reference's e4m3fn values, "
           "0x7F/0xFF NaN, 0x7E = 448, 0x01 = 2^-9, 0x08 = 2^-6, 0x38 = 1, 0x80 = -0")
    report(e4m3_encode(table[finite]).long().tolist() == finite,
           "e4m3 encoder: decode then encode gives each of the 254 finite patterns back")
    w = torch.randn(37, 21) * torch.logspace(-4, 1, 21)  # ragged blocks, subnormals, a zero block
    w[:8, 8:16] = 0
    q, codes, s = fp8_block_quantize(w, 8)
    bad, full = 0, True
    for bi in range(0, 37, 8):
        for bj in range(0, 21, 8):
            blk = w[bi:bi + 8, bj:bj + 8]
            amax = blk.abs().max()
            sb = amax / 448.0 if amax > 0 else torch.tensor(1.0)
            qb = L.round_to_fp8(blk / sb, L.E4M3)
            bad += int(not torch.equal(s[bi // 8, bj // 8], sb) or not torch.equal(q[bi:bi + 8, bj:bj + 8], qb)
                       or not torch.equal(table[codes[bi:bi + 8, bj:bj + 8].long()], qb))
            full &= bool(qb.abs().max() == (448.0 if amax > 0 else 0.0))
    report(bad == 0 and full and list(s.shape) == [5, 3] and torch.equal(s[0, 1], torch.tensor(1.0)),
           f"fp8 block quantization of [37, 21], block 8, vs a loop over its 5 x 3 blocks (edge blocks "
           f"5 x 8, 8 x 5, 5 x 5; a zero block scale 1; each block's largest |q| = 448; {bad} differ)")

    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        parser = build_parser()
        for flags in (["--fp8", "--block", "16"], ["--q-lora-rank", "0", "--batch-size", "1", "--seq-len", "40"]):
            fp8 = "--fp8" in flags
            hf_dir, ref_path = os.path.join(tmp, "hf"), os.path.join(tmp, "reference.safetensors")
            command_make_hf(parser.parse_args(["make-hf", hf_dir] + flags))
            ref, meta = L.load_safetensors(ref_path)
            made = json.loads(meta["config"])
            with open(os.path.join(hf_dir, "config.json")) as f:
                hc = json.load(f)
            raw, dtypes, _ = load_safetensors_typed(os.path.join(hf_dir, "model.safetensors"))
            what = f"make-hf {' '.join(flags)}"
            report(sorted(os.listdir(hf_dir)) == ["config.json", "model.safetensors"]
                   and sorted(ref) == ["logits", "tokens"],
                   f"{what}: OUT_DIR holds config.json and model.safetensors only; tokens + logits beside it")

            # The import: e4m3 bytes decoded by the table, times the block's scale_inv (float32),
            # BF16 widened, F32 as stored; then the HF names mapped back.
            block = hc["quantization_config"]["weight_block_size"][0] if fp8 else None
            seen = {}
            for name, t in raw.items():
                if name.endswith("_scale_inv"):
                    continue
                if dtypes[name] == F8_E4M3:
                    seen[name] = table[t.long()].float() * expand_blocks(raw[name + "_scale_inv"], block, *t.shape)
                else:
                    seen[name] = t.float()
            cfg = titan_config_from_hf(hc, ref["tokens"].shape[1], made["load_balance_coeff"])
            report(all(cfg[k] == made[k] for k in MODEL_KEYS) and list(ref["tokens"].shape) ==
                   [made["batch_size"], made["seq_len"]],
                   f"{what}: config.json read back gives the model keys it was made from")
            state = titan_state_from_hf(cfg, seen)
            logits, _ = reference_logits(cfg, state, ref["tokens"])
            report(torch.equal(logits, ref["logits"]) and float(meta["max_abs_logit"]) == float(logits.abs().max()),
                   f"{what}: the logits of the model rebuilt from the HF folder equal reference.safetensors' "
                   f"exactly (max |logit| {float(meta['max_abs_logit']):.4f})")

            # Against the float32 weights as drawn: fp8 within half an e4m3 step of the value
            # (2^-4 relative; 2^-10 s among the subnormals), BF16 within half a bf16 step.
            original, tokens = make_hf_weights(made)
            report(torch.equal(tokens, ref["tokens"]), f"{what}: the tokens are the seed's")
            worst_fp8, worst_bf16, n_fp8, exact = 0.0, 0.0, 0, True
            expected_dtypes = {}
            for name, w in hf_state(cfg, original):
                got = seen[name]
                if not fp8 or name.endswith("e_score_correction_bias"):
                    expected_dtypes[name] = "F32"
                    exact &= torch.equal(got, w)
                elif hf_fp8_quantized(name, w):
                    expected_dtypes[name], expected_dtypes[name + "_scale_inv"] = F8_E4M3, "F32"
                    n_fp8 += 1
                    sc = expand_blocks(raw[name + "_scale_inv"], block, *w.shape).double()
                    step = torch.maximum(w.double().abs() * 2.0 ** -4, sc * 2.0 ** -10)
                    err = (got.double() - w.double()).abs() / step
                    worst_fp8 = max(worst_fp8, float(err.max()))
                    rows, cols = w.shape
                    exact &= list(raw[name + "_scale_inv"].shape) == [-(-rows // block), -(-cols // block)]
                else:
                    expected_dtypes[name] = "BF16"
                    err = (got.double() - w.double()).abs() / (w.double().abs() * 2.0 ** -8).clamp(min=1e-30)
                    worst_bf16 = max(worst_bf16, float(err.max()))
            report(exact and dtypes == expected_dtypes and worst_fp8 <= 1 + 1e-6 and worst_bf16 <= 1,
                   f"{what}: dtypes as DeepSeek's ({n_fp8} F8_E4M3 with _scale_inv; embeddings, lm_head, norms, "
                   f"router BF16; bias F32), scale_inv [ceil(rows/B), ceil(cols/B)]; dequantized fp8 within "
                   f"{worst_fp8:.3f} of half an e4m3 step (2^-4 |w|, 2^-10 s subnormal), BF16 within "
                   f"{worst_bf16:.3f} of half a bf16 step (2^-8 |w|)" if fp8 else
                   f"{what}: every tensor F32 and equal to the float32 weights as drawn")
            if fp8:
                shapes = {n: (dtypes[n], list(t.shape)) for n, t in raw.items()}
                want = {"model.layers.1.mlp.experts.3.up_proj.weight": (F8_E4M3, [32, 64]),
                        "model.layers.1.mlp.experts.3.up_proj.weight_scale_inv": ("F32", [2, 4]),
                        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight": (F8_E4M3, [40, 64]),
                        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv": ("F32", [3, 4]),
                        "model.layers.0.self_attn.q_b_proj.weight": (F8_E4M3, [96, 32]),
                        "model.layers.0.mlp.down_proj.weight_scale_inv": ("F32", [4, 8]),
                        "model.layers.2.mlp.shared_experts.down_proj.weight": (F8_E4M3, [64, 32]),
                        "model.layers.2.mlp.gate.weight": ("BF16", [8, 64]),
                        "model.layers.2.mlp.gate.e_score_correction_bias": ("F32", [8]),
                        "model.layers.1.self_attn.q_a_layernorm.weight": ("BF16", [32]),
                        "model.embed_tokens.weight": ("BF16", [2048, 64]),
                        "lm_head.weight": ("BF16", [2048, 64]), "model.norm.weight": ("BF16", [64])}
                report(all(shapes.get(n) == v for n, v in want.items()) and hc["torch_dtype"] == "bfloat16"
                       and hc["quantization_config"] == {"quant_method": "fp8", "fmt": "e4m3",
                                                         "activation_scheme": "dynamic", "weight_block_size": [16, 16]}
                       and "model.layers.0.mlp.gate.weight" not in raw
                       and "model.layers.1.mlp.gate_proj.weight" not in raw,
                       f"{what}: names, dtypes and shapes by hand (experts.3.up_proj + scale_inv [2, 4], kv_a [40, 64] "
                       f"in 3 x 4 blocks, router BF16, bias F32 [8]), quantization_config")
                bias_state = dict(state)
                for key in bias_state:
                    if key.endswith("expert_bias"):
                        bias_state[key] = torch.zeros_like(bias_state[key])
                no_bias, _ = reference_logits(cfg, bias_state, ref["tokens"])
                f32, _ = reference_logits(cfg, original, ref["tokens"])
                report(not torch.equal(no_bias, logits) and not torch.equal(f32, logits),
                       f"{what}: the routing bias counts (logits without it differ by up to "
                       f"{float((no_bias - logits).abs().max()):.3g}); fp8 + bf16 vs the float32 weights: "
                       f"up to {float((f32 - logits).abs().max()):.3g} (informational)")
            else:
                report(hc["torch_dtype"] == "float32" and "quantization_config" not in hc and hc["q_lora_rank"] is None
                       and list(raw["model.layers.0.self_attn.q_proj.weight"].shape) == [96, 64],
                       f"{what}: F32 throughout, no quantization_config, q_lora_rank null, q_proj [96, 64]")
            shutil.rmtree(hf_dir)
        print(f"  (make-hf round trips: {time.time() - started:.1f} s)")

    if failures:
        print(f"check: {len(failures)} FAILED: {', '.join(failures)}")
        sys.exit(1)
    print("check: all passed")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("golden", help="inputs folder -> golden*.safetensors")
    g.add_argument("input_dir")
    g.add_argument("output_dir")
    g.add_argument("--max-file-bytes", type=int, default=L.MAX_FILE_BYTES)
    g.set_defaults(func=command_golden)
    m = sub.add_parser("make-inputs", help="random inputs with torchtitan's init rules")
    m.add_argument("dir")
    m.add_argument("--flavor", choices=sorted(FLAVORS), default="tiny")
    m.add_argument("--q-lora-rank", type=int, default=FLAVORS["tiny"]["q_lora_rank"])
    m.add_argument("--score-func", choices=SCORE_FUNCS, default="sigmoid")
    m.add_argument("--no-route-norm", action="store_true")
    m.add_argument("--route-scale", type=float, default=FLAVORS["tiny"]["route_scale"])
    m.add_argument("--score-before-experts", action="store_true")
    m.add_argument("--n-expert-groups", type=int, default=FLAVORS["tiny"]["n_expert_groups"])
    m.add_argument("--n-limited-groups", type=int, default=FLAVORS["tiny"]["n_limited_groups"])
    m.add_argument("--no-load-balance", action="store_true", help="load_balance_coeff null: no bias")
    m.add_argument("--batch-size", type=int, default=1)
    m.add_argument("--seq-len", type=int, default=64)
    m.add_argument("--steps", type=int, default=5)
    m.add_argument("--accumulation-steps", type=int, default=1)
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=command_make_inputs)
    h = sub.add_parser("make-hf", help="a Hugging Face DeepSeek V3 folder (optionally DeepSeek's fp8) "
                                       "and the logits its import must give")
    h.add_argument("out_dir")
    h.add_argument("--flavor", choices=sorted(FLAVORS), default="tiny")
    h.add_argument("--q-lora-rank", type=int, default=None, help="the flavor's (tiny: 32); 0: q_proj")
    h.add_argument("--fp8", action="store_true", help="DeepSeek's block-wise float8 e4m3 weights, BF16 the rest")
    h.add_argument("--block", type=int, default=None, help=f"fp8 block size (default {HF_DEFAULT_BLOCK})")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--batch-size", type=int, default=2)
    h.add_argument("--seq-len", type=int, default=64)
    h.add_argument("--reference", default=None,
                   help="tokens + logits file (default: OUT_DIR/../reference.safetensors)")
    h.set_defaults(func=command_make_hf)
    c = sub.add_parser("check", help="self-test of the reference's pieces")
    c.set_defaults(func=command_check)
    return parser


def main():
    args = build_parser().parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
