"""ref_model.py — the PyTorch reference of moe's model and trainer, written
independently from the C code straight from docs/METHOD.md. Loads a moe checkpoint
(config.json + model.safetensors) and computes logits, losses, gradients and
AdamW training steps. Tests only (Debian's python3-torch); the product never
needs Python.

  python3 ref_model.py train --model DIR --data FILE --steps N [--dtype float64]
      [--autocast-bf16]
      prints one JSON line per step: {"step", "loss", "lm_loss", "aux_loss", "lr"}
"""
import argparse
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, __import__("os").path.dirname(__file__))
import moe_files  # noqa: E402


# ---- model ------------------------------------------------------------------

def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, theta):
    """x [B, nh, T, hd], rotate-half convention (pairs i, i + hd/2)."""
    B, nh, T, hd = x.shape
    half = hd // 2
    i = torch.arange(half, dtype=torch.float64)
    freq = theta ** (-2.0 * i / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


# moe's precision "bf16": the weight products (attention projections, FFN
# and expert matrices, LM head; not the routers) round both inputs to bf16
# (nearest, ties to even) and add exactly; the backward rounds the incoming
# gradient and the saved inputs the same way. Attention's own products read
# q (after RoPE), k and v rounded to bf16, the gradient passing through the
# rounding unchanged; its probabilities and gradients are not rounded
# (src/kernels/attention.c). Everything else stays in the working dtype.
BF16 = False
# train --autocast-bf16: the forward under torch.autocast("cpu", bfloat16),
# what a PyTorch user picks for bf16 mixed precision (the benchmarks' peer)
AUTOCAST_BF16 = False


def _bf(t):
    return t.to(torch.bfloat16).to(t.dtype)


class _LinearBf16(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return _bf(x) @ _bf(w).T

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gb = _bf(g)
        dw = gb.reshape(-1, g.shape[-1]).T @ _bf(x).reshape(-1, x.shape[-1])
        return gb @ _bf(w), dw


def lin(x, w):
    """x @ w.T for a weight w [out, in]."""
    return _LinearBf16.apply(x, w) if BF16 else x @ w.T


def swiglu(x, w1, w3, w2):
    return lin(F.silu(lin(x, w1)) * lin(x, w3), w2)


class FFNDense:
    """METHOD §1 dense SwiGLU."""

    def __init__(self, cfg, prefix):
        self.prefix = prefix

    def __call__(self, P, x, ctx):
        p = self.prefix
        return swiglu(x, P[f"{p}.gate_proj.weight"], P[f"{p}.up_proj.weight"], P[f"{p}.down_proj.weight"]), 0.0


def _splitmix64(x):
    M = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def uniform(seed, layer, step, t, token, stream):
    """SparseMixer's counter-based uniform in (0, 1) (moe_router_uniform in C)."""
    h = _splitmix64(seed)
    for v in (layer, step, t, token, stream):
        h = _splitmix64(h ^ v)
    return ((h >> 11) + 0.5) * 2.0 ** -53


def lb_loss(c, p, mask, k, N):
    """TopK load-balancing loss (METHOD §2.1) with n_e = mask.sum(0), a constant."""
    E = p.shape[1]
    return c["aux_loss_coef"] * E / (k * N * N) * (p.sum(0) * mask.sum(0)).sum()


class FFNMoE:
    """METHOD §2: routers topk (§2.1), relu (§2.2), and the baselines of §2.4
    (topp, hash, expert_choice, sparsemixer); shared experts, optionally mixed
    by the 2-way shared gate. Every expert is applied to every token and
    weighted by its gate (zero when inactive): a dense computation, so it
    checks moe's dropless dispatch by a different route."""

    def __init__(self, cfg, prefix, shared_state):
        self.cfg, self.prefix, self.st = cfg, prefix, shared_state
        G = cfg["granularity"]
        # MoE++'s zero-computation experts are routed after the Ef FFN experts
        self.Ef = cfg["n_experts"] * G
        self.Z, self.C, self.K = (cfg.get(f"n_{n}_experts", 0) for n in ("zero", "copy", "const"))
        self.E, self.k = self.Ef + self.Z + self.C + self.K, cfg["top_k"] * G
        self.layer = int(prefix.split(".")[2])
        # relu_lambda_per_layer: this layer's own lambda (fp32) and step counts
        self.own = {"lambda": np.float32(cfg.get("relu_lambda0", 0.0)), "active": 0.0, "total": 0.0}
        # aux_free_bias: the selection bias (fp32, no gradient) and the step's loads
        self.bias = np.zeros(self.E, np.float32)
        self.load = np.zeros(self.E)
        # global_batch_balance: the step's n_e and tokens from the routing-only pass
        self.step_n, self.step_T, self.passes = np.zeros(self.E), 0, 0

    def count(self, gates, ctx):
        """The step's sparsity counts (every router, training only; not the
        routing-only pass of global_batch_balance)."""
        if ctx["training"] and not ctx.get("prepass"):
            for st in (self.st, self.own):
                st["active"] += float((gates != 0).sum())
                st["total"] += gates.shape[0] * self.E

    def end_step(self):
        """The layer's own end of step: the per-layer lambda rule."""
        c, o, rec = self.cfg, self.own, {}
        if c.get("relu_lambda_per_layer") and o["total"] > 0:
            s = 1.0 - o["active"] / o["total"]
            used = o["lambda"]
            o["lambda"] = np.float32(float(used) * c["relu_alpha"] if s < c["target_sparsity"]
                                     else float(used) / c["relu_alpha"])
            rec = {"step_sparsity": s, "lambda": float(used)}
        o["active"] = o["total"] = 0.0
        if c.get("aux_free_bias"):  # b_e += u sign(mean load - load_e), in fp32
            mean = self.load.sum() / self.E
            if self.load.sum() > 0:
                step = c["aux_free_rate"] * np.sign(mean - self.load)
                self.bias = (self.bias.astype(np.float64) + step).astype(np.float32)
            rec["expert_bias"] = [float(b) for b in self.bias]
        self.load[:] = 0
        self.step_n[:], self.step_T, self.passes = 0, 0, 0
        return rec

    def load_state(self, state):
        """Router state from router_state.safetensors (moe's names)."""
        name = f"{self.prefix}.router.lambda"
        if name in state:
            self.own["lambda"] = np.float32(state[name][0])
        name = f"{self.prefix}.router.expert_bias"
        if name in state:
            self.bias = np.asarray(state[name], np.float32).copy()

    def route(self, logits, ctx):
        c, E, N = self.cfg, self.E, logits.shape[0]
        if c["router"] in ("topk", "learned_hash"):
            # learned_hash (CartesianMoE's Hash baseline): TopK on the token's
            # row of a learned table, always renormalised. scoring_func "sigmoid"
            # (DeepSeek-V3): p = sigmoid(logits), always renormalised over the k
            sigmoid = c.get("scoring_func", "softmax") == "sigmoid"
            p = logits.sigmoid() if sigmoid else logits.softmax(-1)
            k = c["k_warm"] * c["granularity"] if c["k_warm"] > 0 and ctx["step"] < c["k_warm_steps"] else self.k
            # aux_free_bias: chosen by p + b (the bias only chooses)
            choice = p.detach() + torch.from_numpy(self.bias.astype(np.float64)).to(p.dtype) \
                if c.get("aux_free_bias") else p
            idx = choice.topk(k, dim=-1).indices
            mask = torch.zeros_like(p).scatter(1, idx, 1.0)
            if ctx.get("prepass"):  # global_batch_balance: count the step's n_e only
                self.step_n += mask.sum(0).detach().numpy()
                self.step_T += N
                self.passes += 1
                return p * mask, 0.0
            if ctx["training"] and c.get("aux_free_bias"):
                self.load += mask.sum(0).detach().numpy()
            gates = p * mask
            # norm_topk_prob renormalises at every k (k = 1: a gate of exactly 1);
            # CartesianMoE's sub-layers ("if_several") only when k > 1 (METHOD §2.3)
            # CartesianMoE's Hash baseline (learned_hash) renormalises its top-k
            # when k > 1, whatever norm_topk_prob says
            if c["router"] == "learned_hash":
                renorm = k > 1
            else:
                renorm = c["norm_topk_prob"] is True or (c["norm_topk_prob"] == "if_several" and k > 1) or sigmoid
            if renorm:
                gates = gates / gates.sum(-1, keepdim=True).clamp_min(1e-20)
            gates = gates * c.get("routed_scaling_factor", 1.0)
            aux = 0.0
            if ctx["training"] and c["aux_loss_coef"] > 0:  # sigmoid: on the scores normalised over E
                q = p / p.sum(-1, keepdim=True) if sigmoid else p
                if c.get("global_batch_balance") and self.step_T > 0:  # the whole step's f_i
                    n, T = torch.from_numpy(self.step_n).to(p.dtype), self.step_T
                    aux = self.passes * c["aux_loss_coef"] * E / (k * T * T) * (q.sum(0) * n).sum()
                else:
                    aux = c["aux_loss_coef"] * E / (k * N * N) * (q.sum(0) * mask.sum(0)).sum()
            if ctx["training"] and c["z_loss_coef"] > 0:
                aux = aux + c["z_loss_coef"] * torch.logsumexp(logits, -1).pow(2).mean()
            return gates, aux
        if c["router"] == "relu":
            gates = F.relu(logits)
            active = (gates > 0).to(gates.dtype)
            f = E / (self.k * N) * active.sum(0) if c["l1_load_balance"] else torch.ones(E, dtype=gates.dtype)
            reg = (gates * f.detach()).sum() / N
            lam = self.own["lambda"] if c.get("relu_lambda_per_layer") else self.st["lambda"]
            aux = float(lam) * reg if ctx["training"] else 0.0
            return gates, aux
        if c["router"] == "topp":
            p = logits.softmax(-1)
            ps, idx = p.sort(-1, descending=True)
            before = ps.detach().cumsum(-1) - ps.detach()  # probability taken before each
            mask = torch.zeros_like(p).scatter(1, idx, (before < c["top_p"]).to(p.dtype))
            gates = p * mask
            aux = 0.0
            if ctx["training"] and c["aux_loss_coef"] > 0:
                aux = lb_loss(c, p, mask, float(mask.sum()) / N, N)
            if ctx["training"] and c["topp_entropy_coef"] > 0:
                aux = aux - c["topp_entropy_coef"] * (p * p.log()).sum() / N
            return gates, aux
        if c["router"] == "hash":
            tok = ctx["tokens"].reshape(-1)
            return F.one_hot(tok % E, E).to(self.dtype), 0.0
        if c["router"] == "expert_choice":
            p = logits.softmax(-1)
            C = min(N, max(1, N * self.k // E))
            pn = p.detach().numpy()
            mask = np.zeros(pn.shape)
            for e in range(E):  # top C tokens per expert, ties to the earlier token
                mask[np.lexsort((np.arange(N), -pn[:, e]))[:C], e] = 1.0
            return p * torch.from_numpy(mask).to(p.dtype), 0.0
        if c["router"] == "sparsemixer":
            return self.sparsemixer(logits, ctx)
        raise ValueError(c["router"])

    def sparsemixer(self, logits, ctx):
        """SparseMixer-v2 (GRIN): k sequential picks over candidates near the
        best logit; training samples (Gumbel) and scales a non-arg-max pick by
        w = 1 or 1/3 (Heun's third-order method); the gradient is that of
        pi[s] without w: gate = pi[s] + (w - 1) * pi[s].detach()."""
        c, E, N = self.cfg, self.E, logits.shape[0]
        z = logits.detach().numpy()
        tok = ctx["tokens"].reshape(-1).numpy()
        left = np.ones((N, E), bool)
        gates = torch.zeros_like(logits)
        mask = np.zeros((N, E))
        for j in range(self.k):
            cand = np.zeros((N, E), bool)
            sel, w = np.zeros(N, np.int64), np.ones(N)
            for t in range(N):
                zl = np.where(left[t], z[t], -np.inf)
                best = int(np.argmax(zl))
                mx = z[t, best]
                with np.errstate(invalid="ignore", divide="ignore"):
                    cand[t] = left[t] & ~((mx - z[t]) / np.maximum(np.abs(z[t]), mx) > 2 * c["jitter_eps"])
                pick = best
                if ctx["training"]:
                    keys = [z[t, e] - math.log(-math.log(uniform(c["seed"], self.layer, ctx["step"], t, int(tok[t]),
                                                                   j * (E + 1) + e)))
                            if cand[t, e] else -np.inf for e in range(E)]
                    pick = int(np.argmax(keys))
                    if pick != best:
                        u = uniform(c["seed"], self.layer, ctx["step"], t, int(tok[t]), j * (E + 1) + E)
                        w[t] = 1.0 if u > 0.75 else 1.0 / 3.0
                sel[t] = pick
                left[t, pick] = False
                mask[t, pick] = 1.0
            pi = logits.masked_fill(torch.from_numpy(~cand), float("-inf")).softmax(-1)
            ps = pi.gather(1, torch.from_numpy(sel)[:, None])[:, 0]
            wt = torch.from_numpy(w).to(logits.dtype)
            g = ps + (wt - 1) * ps.detach()
            gates = gates + F.one_hot(torch.from_numpy(sel), E).to(logits.dtype) * g[:, None]
        aux = 0.0
        if ctx["training"] and c["aux_loss_coef"] > 0:
            aux = lb_loss(c, logits.softmax(-1), torch.from_numpy(mask).to(logits.dtype), self.k, N)
        return gates, aux

    # sparse = True computes each expert on its own tokens only (index_select /
    # index_add): the efficient PyTorch formulation, used by the benchmarks
    sparse = False

    def __call__(self, P, x, ctx):
        p = self.prefix
        self.dtype = x.dtype
        if f"{p}.router.weight" in P:
            logits = x @ P[f"{p}.router.weight"].T
        elif f"{p}.router.token_weight" in P:  # learned_hash: a row per token id
            logits = P[f"{p}.router.token_weight"][ctx["tokens"].reshape(-1)]
        else:
            logits = x[:, :0]
        gates, aux = self.route(logits, ctx)
        self.gates = gates.detach()
        self.count(gates, ctx)
        W1, W3, W2 = (P[f"{p}.experts.{n}_proj.weight"] for n in ("gate", "up", "down"))
        y = 0.0
        zc = gates[:, self.Ef:]
        gates = gates[:, :self.Ef]
        if FFNMoE.sparse:
            y = torch.zeros_like(x)
            for e in range(self.Ef):
                idx = (gates[:, e] != 0).nonzero().squeeze(1)
                if idx.numel():
                    xe = x.index_select(0, idx)
                    ye = gates.index_select(0, idx)[:, e:e + 1] * swiglu(xe, W1[e], W3[e], W2[e])
                    y = y.index_add(0, idx, ye.to(y.dtype))  # autocast: ye may be bf16
            gates = gates[:, :0]  # the loop below is skipped
        for e in range(gates.shape[1]):
            y = y + gates[:, e:e + 1] * swiglu(x, W1[e], W3[e], W2[e])
        # zero experts add 0; copy experts g x; constant experts g (a1 x + a2 v)
        for j in range(self.C):
            y = y + zc[:, self.Z + j:self.Z + j + 1] * x
        for j in range(self.K):
            a = (x @ P[f"{p}.const_experts.weight"][j].T).softmax(-1)
            out = a[:, :1] * x + a[:, 1:] * P[f"{p}.const_experts.vector"][j]
            y = y + zc[:, self.Z + self.C + j:self.Z + self.C + j + 1] * out
        s = 0.0
        for j in range(self.cfg["n_shared_experts"]):
            S1, S3, S2 = (P[f"{p}.shared_experts.{n}_proj.weight"] for n in ("gate", "up", "down"))
            s = s + swiglu(x, S1[j], S3[j], S2[j])
        if self.cfg.get("shared_gate") and self.cfg["n_shared_experts"] > 0:
            c = (x @ P[f"{p}.shared_gate.weight"].T + P[f"{p}.shared_gate.bias"]).softmax(-1)
            return c[:, :1] * y + c[:, 1:] * s, aux
        return y + s, aux


class FFNCartesian:
    """METHOD §2.3: two sequential MoE sub-layers of half-size experts, each with
    a topk router (renormalised for k > 1), one shared sub-expert mixed by the
    2-way gate; an RMSNorm between them and the residual into h1.
    Returns y = out - h = a + b."""

    def __init__(self, cfg, prefix, shared_state):
        sub = dict(cfg, ffn="moe", router="topk", ffn_dim=cfg["ffn_dim"] // 2, norm_topk_prob="if_several",
                   n_shared_experts=1, shared_gate=True)
        self.A = FFNMoE(sub, f"{prefix}.layer_a", shared_state)
        self.B = FFNMoE(sub, f"{prefix}.layer_b", shared_state)
        self.prefix, self.eps = prefix, cfg["norm_eps"]

    def __call__(self, P, x, ctx):
        a, aux_a = self.A(P, x, ctx)
        h1 = ctx["residual"] + a
        b, aux_b = self.B(P, rmsnorm(h1, P[f"{self.prefix}.norm_b.weight"], self.eps), ctx)
        return a + b, aux_a + aux_b


class FFNLory:
    """METHOD §2.4 Lory: per sequence, segment s merges the experts with
    softmax(Wr mean(x of segment s-1)); the first segment uses its own mean
    with the gradient stopped."""

    def __init__(self, cfg, prefix, shared_state):
        self.cfg, self.prefix, self.st = cfg, prefix, shared_state

    def __call__(self, P, x, ctx):
        p, L, B, T = self.prefix, self.cfg["lory_segment"], ctx["B"], ctx["T"]
        Wr = P[f"{p}.router.weight"]
        W1, W3, W2 = (P[f"{p}.experts.{n}_proj.weight"] for n in ("gate", "up", "down"))
        xs = x.view(B, T, -1)
        out = []
        for b in range(B):
            for s0 in range(0, T, L):
                src = xs[b, max(s0 - L, 0):max(s0, L)]
                w = (src.mean(0) @ Wr.T).softmax(-1)
                if s0 == 0:
                    w = w.detach()
                merged = [torch.einsum("e,e...->...", w, W) for W in (W1, W3, W2)]
                out.append(swiglu(xs[b, s0:s0 + L], *merged))
        if ctx["training"]:
            self.st["active"] += x.shape[0] * Wr.shape[0]
            self.st["total"] += x.shape[0] * Wr.shape[0]
        return torch.cat(out, 0), 0.0


FFN_KINDS = {"dense": FFNDense, "moe": FFNMoE, "cartesian": FFNCartesian, "lory": FFNLory}


class RefModel:
    def __init__(self, cfg, params, dtype=torch.float64):
        self.cfg = cfg
        self.P = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in params.items()}
        # ReMoE's lambda is fp32 (METHOD §2.2): kept as a numpy float32
        self.routing = {"lambda": np.float32(cfg.get("relu_lambda0", 0.0)), "active": 0.0, "total": 0.0}
        self.ffns = []
        for l in range(cfg["n_layers"]):
            prefix = f"model.layers.{l}.mlp"
            if cfg["ffn"] != "dense" and l >= cfg.get("dense_first_layers", 0) and (l + 1) % cfg["moe_every"] == 0:
                self.ffns.append(FFN_KINDS[cfg["ffn"]](cfg, prefix, self.routing))
            else:
                self.ffns.append(FFNDense(cfg, prefix))
        self.dtype = dtype

    def forward(self, inputs, targets=None, step=0, training=True, prepass=False):
        """inputs, targets: LongTensor [B, T]. Returns logits [B*T, V], lm_loss, aux_loss."""
        c, P = self.cfg, self.P
        B, T = inputs.shape
        D, H, KV = c["hidden"], c["n_heads"], c["n_kv_heads"]
        hd = D // H
        eps = c["norm_eps"]
        ctx = {"tokens": inputs.reshape(-1), "B": B, "T": T, "step": step, "training": training,
               "prepass": prepass}
        x = P["model.embed_tokens.weight"][inputs]
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        aux = 0.0
        for l in range(c["n_layers"]):
            p = f"model.layers.{l}"
            h = rmsnorm(x, P[f"{p}.input_layernorm.weight"], eps)
            q = lin(h, P[f"{p}.self_attn.q_proj.weight"]).view(B, T, H, hd).transpose(1, 2)
            k = lin(h, P[f"{p}.self_attn.k_proj.weight"]).view(B, T, KV, hd).transpose(1, 2)
            v = lin(h, P[f"{p}.self_attn.v_proj.weight"]).view(B, T, KV, hd).transpose(1, 2)
            q, k = rope(q, c["rope_theta"]), rope(k, c["rope_theta"])
            if BF16:  # the value rounded, the gradient passed through
                q, k, v = (t + (_bf(t) - t).detach() for t in (q, k, v))
            k = k.repeat_interleave(H // KV, dim=1)
            v = v.repeat_interleave(H // KV, dim=1)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            o = (att @ v).transpose(1, 2).reshape(B, T, H * hd)
            x = x + lin(o, P[f"{p}.self_attn.o_proj.weight"])
            h2 = rmsnorm(x, P[f"{p}.post_attention_layernorm.weight"], eps).reshape(B * T, D)
            ctx["residual"] = x.reshape(B * T, D)  # CartesianMoE's h
            y, a = self.ffns[l](P, h2, ctx)
            aux = aux + a
            x = x + y.view(B, T, D)
        x = rmsnorm(x, P["model.norm.weight"], eps)
        logits = lin(x, P["lm_head.weight"]).reshape(B * T, -1)
        lm = F.cross_entropy(logits, targets.reshape(-1)) if targets is not None else None
        return logits, lm, aux

    def end_step(self):
        """Once per optimiser step: the step's sparsity over all MoE layers and
        micro-batches, and ReMoE's lambda rule. Returns the metrics."""
        r, c = self.routing, self.cfg
        if r["total"] == 0:
            return {}
        sparsity = 1.0 - r["active"] / r["total"]
        used = r["lambda"]
        if c["router"] == "relu":  # computed in double, stored as fp32
            alpha = c["relu_alpha"]
            r["lambda"] = np.float32(float(used) * alpha if sparsity < c["target_sparsity"] else float(used) / alpha)
        r["active"] = r["total"] = 0.0
        layers = [f.end_step() for f in self.ffns if isinstance(f, FFNMoE)]
        return {"sparsity": sparsity, "lambda": float(used), "layers": layers}


def load(model_dir, dtype=torch.float64):
    """A model from moe init or a checkpoint; a checkpoint's ReMoE lambda
    carries on, as `moe train --model` does."""
    import os
    ck = moe_files.resolve_checkpoint(model_dir)
    cfg = moe_files.read_config(ck)
    params, _ = moe_files.read_safetensors(f"{ck}/model.safetensors")
    model = RefModel(cfg, params, dtype)
    if os.path.exists(f"{ck}/trainer_state.json"):
        with open(f"{ck}/trainer_state.json") as f:
            model.routing["lambda"] = np.float32(json.load(f)["lambda"])
    if os.path.exists(f"{ck}/router_state.safetensors"):  # untrained router state (docs/FORMAT.md)
        state, _ = moe_files.read_safetensors(f"{ck}/router_state.safetensors")
        for f in model.ffns:
            if isinstance(f, FFNMoE):
                f.load_state(state)
    return model


# ---- data and training ------------------------------------------------------

def sequential_batch(ids, b, B, T):
    """Batch b of the sequential loader: row r = ids[(b*B + r) % n_rows * T ...][:T+1]."""
    n_rows = (len(ids) - 1) // T
    rows = [((b * B + r) % n_rows) * T for r in range(B)]
    x = np.stack([ids[s:s + T] for s in rows]).astype(np.int64)
    y = np.stack([ids[s + 1:s + T + 1] for s in rows]).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def lr_at(cfg, step):
    peak, floor_lr, warm, steps = cfg["lr"], cfg["lr"] * cfg["min_lr_ratio"], cfg["warmup"], cfg["steps"]
    if step < warm:
        return peak * (step + 1) / warm
    span = steps - warm
    prog = min(1.0, (step - warm) / span) if span > 0 else 1.0
    return floor_lr + (peak - floor_lr) * 0.5 * (1 + math.cos(math.pi * prog))


def train(model, ids, cfg, steps, log=None):
    """AdamW as METHOD §1 (torch.optim.AdamW), sequential data. Yields per-step dicts."""
    decay = [p for n, p in model.P.items() if p.dim() > 1]
    no_decay = [p for n, p in model.P.items() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["adam_eps"])
    model.optimizer = opt  # its state (exp_avg, exp_avg_sq): adamw_moments()
    B, T, ga = cfg["batch_size"], cfg["seq_len"], cfg["grad_accum"]
    params = list(model.P.values())
    for step in range(steps):
        t0 = time.perf_counter()
        lr = lr_at(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=False)
        lm_sum, aux_sum = 0.0, 0.0
        if ga > 1 and cfg.get("global_batch_balance"):  # count the step's routing first
            with torch.no_grad():
                for micro in range(ga):
                    model.forward(sequential_batch(ids, step * ga + micro, B, T)[0], step=step, prepass=True)
        for micro in range(ga):
            x, y = sequential_batch(ids, step * ga + micro, B, T)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=AUTOCAST_BF16):
                _, lm, aux = model.forward(x, y, step=step)
            ((lm + aux) / ga).backward()
            lm_sum += lm.item() / ga
            aux_sum += float(aux) / ga
        if cfg["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
        opt.step()
        rec = {"step": step + 1, "loss": lm_sum + aux_sum, "lm_loss": lm_sum, "aux_loss": aux_sum,
               "lr": lr, "seconds": time.perf_counter() - t0}
        rec.update(model.end_step())
        yield rec


def adamw_moments(model):
    """After train(): {name: (exp_avg, exp_avg_sq)} as numpy arrays, AdamW's
    first and second moments (torch's definitions, no bias correction), named
    as moe's optimizer.safetensors names them (docs/FORMAT.md)."""
    st = model.optimizer.state
    return {n: (st[p]["exp_avg"].numpy(), st[p]["exp_avg_sq"].numpy()) for n, p in model.P.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--batch", type=int)
    t.add_argument("--seq", type=int)
    t.add_argument("--grad-accum", type=int)
    t.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--sparse", action="store_true", help="per-expert token gathering (benchmarks)")
    t.add_argument("--autocast-bf16", action="store_true",
                   help="forward under torch.autocast('cpu', dtype=torch.bfloat16) (benchmarks)")
    a = ap.parse_args()
    global AUTOCAST_BF16
    AUTOCAST_BF16 = a.autocast_bf16
    torch.set_num_threads(a.threads)
    FFNMoE.sparse = a.sparse
    model = load(a.model, getattr(torch, a.dtype))
    cfg = dict(model.cfg)
    # as `moe train`: --steps, --batch, --seq and --grad-accum override the config's keys
    for k, v in (("steps", a.steps), ("batch_size", a.batch), ("seq_len", a.seq), ("grad_accum", a.grad_accum)):
        if v is not None:
            cfg[k] = v
    ids = moe_files.read_tokens(a.data)["ids"]
    for rec in train(model, ids, cfg, a.steps):
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
