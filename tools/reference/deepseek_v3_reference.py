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
  deepseek_v3_reference.py check                         self-test of this file's pieces
"""

import argparse
import json
import math
import os
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
    cfg = load_config(os.path.join(input_dir, "config.json"))
    init, _ = L.load_safetensors(os.path.join(input_dir, "init.safetensors"))
    batch, _ = L.load_safetensors(os.path.join(input_dir, "batch.safetensors"))
    names = parameter_names(cfg)
    if set(init) != set(names):
        raise ValueError(f"init.safetensors: missing {sorted(set(names) - set(init))}, "
                         f"unexpected {sorted(set(init) - set(names))}")
    shape = (cfg["steps"], cfg["accumulation_steps"], cfg["batch_size"], cfg["seq_len"])
    for key in ("tokens", "labels"):
        if key not in batch or tuple(batch[key].shape) != shape or batch[key].dtype not in (torch.int64, torch.int32):
            raise ValueError(f"batch.safetensors: {key} must be I64 (or I32) of shape {list(shape)}")
    tokens, labels = batch["tokens"].long(), batch["labels"].long()
    if tokens.min() < 0 or tokens.max() >= cfg["vocab_size"]:
        raise ValueError("batch.safetensors: tokens outside [0, vocab_size)")
    valid = labels != IGNORE_INDEX
    if (labels[valid] < 0).any() or (labels[valid] >= cfg["vocab_size"]).any():
        raise ValueError("batch.safetensors: labels outside [0, vocab_size) and not -100")
    if (valid.flatten(1).sum(1) == 0).any():
        raise ValueError("batch.safetensors: a step has no valid label (the mean loss is 0/0)")
    return cfg, init, tokens, labels


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
    c = sub.add_parser("check", help="self-test of the reference's pieces")
    c.set_defaults(func=command_check)
    return parser


def main():
    args = build_parser().parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
