"""
The one file the research agent edits: a small GPT, its optimizer and its training loop.

It trains for the campaign's fixed wall-clock budget and ends by handing the model to the harness,
which scores it with the frozen val_bpb metric (lower is better) and prints the summary block.
Everything is fair game here: architecture, optimizer, hyperparameters, batch size, model size.
What is not: nanochat/prepare.py (data, tokenizer, evaluation), which is frozen.

By hand:  python -m nanochat.train --profile cpu --time-budget 15
"""

import gc
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from nanochat.prepare import load_harness

H = load_harness()  # the campaign's frozen context: seq_len, vocab_size, time_budget, device, data

# -----------------------------------------------------------------------------
# Hyperparameters (the agent's knobs)

# Model shape
DEPTH = 8                   # transformer blocks
ASPECT_RATIO = 64           # model_dim = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM
HEAD_DIM = 128              # channels per attention head
WINDOW_PATTERN = "L"        # per block, repeating: S = sliding window of SHORT_WINDOW tokens, L = full context
                            # (on an H100 with torch 2.11, full causal attention (cuDNN) is faster than windows (FlexAttention))
SHORT_WINDOW = 1024         # tokens a short-window block attends to (the last block is always L)
VALUE_EMBEDS = True         # give alternate blocks a value embedding table (ResFormer-style)
VE_GATE_CHANNELS = 32       # residual channels the value embeddings' per-head gate reads
LOGIT_SOFTCAP = 15.0        # tanh soft-capping of the output logits

# Batch
TOTAL_BATCH_TOKENS = 2**18  # tokens per optimizer step (gradient accumulation fills the rest); in budgets of
                            # minutes, twice the steps at half the batch won 0.05 bpb (docs/PERFORMANCE.md)
DEVICE_BATCH_SIZE = 128     # rows per forward/backward pass

# Optimization: Muon for the matrices inside blocks, AdamW for embeddings, head and scalars
MATRIX_LR = 0.04            # Muon
EMBEDDING_LR = 0.6          # AdamW, token and value embeddings
UNEMBEDDING_LR = 0.004      # AdamW, lm_head
SCALAR_LR = 0.5             # AdamW, the x0 mixing scalars (the residual scalars get 1% of it)
WEIGHT_DECAY = 0.2          # Muon's cautious weight decay, decaying linearly to 0 over the run
ADAM_BETAS = (0.8, 0.95)
MUON_MOMENTUM = (0.85, 0.95, 300)   # Muon momentum ramps from the first to the second over this many steps
MUON_BETA2 = 0.95           # NorMuon: decay of the per-neuron second moment of the update
WARMUP_RATIO = 0.0          # fraction of the time budget spent ramping the learning rate up
WARMDOWN_RATIO = 0.5        # fraction of the time budget spent decaying it at the end
FINAL_LR_FRAC = 0.0         # learning rate multiplier reached at the end of the warm-down

# Run (the seed is the harness's, H.seed: the campaign repeats runs with different seeds to measure noise)
COMPILE = True              # CUDA: torch.compile per block (FlexAttention for sliding windows). False: the plain
                            # eager path (SDPA with boolean masks) the CPU always takes, e.g. as a reference
UNTIMED_STEPS = 1           # first steps (compilation, warm-up) don't count against the budget
MAX_STEPS = 0               # 0: train for the time budget; N: stop after N timed steps (or the budget, if sooner),
                            # with the schedule's progress counted in steps, for like-for-like comparisons

# -----------------------------------------------------------------------------
# Model

def norm(x):
    return F.rms_norm(x, (x.size(-1),), eps=1e-6)   # explicit: the default eps is finfo(dtype).eps, 0.008 in bf16


def rotary(seq_len, head_dim, base=10000.0, device=None):
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]   # (1, T, 1, D/2)


def apply_rotary(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def window_sizes(depth, pattern, short, seq_len):
    sizes = [short if pattern[i % len(pattern)] == "S" else seq_len for i in range(depth)]
    sizes[-1] = seq_len   # the last block always sees the whole context
    return [min(s, seq_len) for s in sizes]


class Attention(nn.Module):
    def __init__(self, dim, n_head, window, has_ve):
        super().__init__()
        self.n_head, self.head_dim, self.window = n_head, dim // n_head, window
        self.c_q = nn.Linear(dim, dim, bias=False)
        self.c_k = nn.Linear(dim, dim, bias=False)
        self.c_v = nn.Linear(dim, dim, bias=False)
        self.c_proj = nn.Linear(dim, dim, bias=False)
        self.ve_gate = nn.Linear(VE_GATE_CHANNELS, n_head, bias=False) if has_ve else None

    def forward(self, x, ve, cos, sin, mask):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        dtype = q.dtype   # bf16 under autocast; rotary, norms and the value mix below run in fp32
        if ve is not None:   # value embedding mixed in per head and token, gated by the input (starts at 1)
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS]))
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_head, self.head_dim)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))   # QK-norm
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)   # the attention kernels' fast path is bf16
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if mask is None:                          # full causal context: flash attention (cuDNN's on an H100)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif isinstance(mask, torch.Tensor):      # sliding window as a boolean mask (CPU, or COMPILE = False)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:                                     # CUDA: sliding window as a FlexAttention block mask
            y = flex_attention(q, k, v, block_mask=mask)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim, bias=False)
        self.c_proj = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())   # ReLU^2


class Block(nn.Module):
    def __init__(self, dim, n_head, window, has_ve):
        super().__init__()
        self.attn = Attention(dim, n_head, window, has_ve)
        self.mlp = MLP(dim)

    def forward(self, x, x0, a, b, ve, cos, sin, mask):
        x = a * x + b * x0   # learnt mix of the residual stream and the embedding
        x = x + self.attn(norm(x), ve, cos, sin, mask)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, seq_len, depth, dim, head_dim):
        super().__init__()
        self.depth, self.dim, self.seq_len = depth, dim, seq_len
        n_head = dim // head_dim
        self.windows = window_sizes(depth, WINDOW_PATTERN, SHORT_WINDOW, seq_len)
        self.ve_layers = [i for i in range(depth) if VALUE_EMBEDS and i % 2 == (depth - 1) % 2]   # alternate, incl. the last
        self.wte = nn.Embedding(vocab_size, dim)
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(vocab_size, dim) for i in self.ve_layers})
        self.blocks = nn.ModuleList(Block(dim, n_head, self.windows[i], i in self.ve_layers) for i in range(depth))
        self.resid_lambdas = nn.Parameter(torch.ones(depth))   # x <- a_i * x + b_i * x0 before block i
        self.x0_lambdas = nn.Parameter(torch.full((depth,), 0.1))   # some x0 from the start: steadier across seeds
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        cos, sin = rotary(seq_len, head_dim)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.masks = [None] * depth

    @torch.no_grad()
    def init_weights(self):
        bound = (3 / self.dim) ** 0.5   # uniform with variance 1/dim
        nn.init.normal_(self.wte.weight, std=1.0)   # normed before use: only its direction matters
        for emb in self.value_embeds.values():      # added to v unnormed: on the scale of c_v's output
            nn.init.uniform_(emb.weight, -bound, bound)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)   # every block starts as the identity
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)

    def setup_attention(self, device, flex):
        """One mask per block: None = plain causal; else a sliding-window causal mask."""
        T = self.seq_len
        for i, window in enumerate(self.windows):
            if window >= T:
                continue
            if flex:   # FlexAttention needs torch.compile: eager, it materialises the whole score matrix
                def in_window(b, h, q, kv, window=window):
                    return (q >= kv) & (q - kv < window)
                self.masks[i] = create_block_mask(in_window, B=None, H=None, Q_LEN=T, KV_LEN=T, device=device)
            else:
                pos = torch.arange(T, device=device)
                self.masks[i] = (pos[None, :] <= pos[:, None]) & (pos[:, None] - pos[None, :] < window)

    def embed(self, idx):
        """The token embedding (normed) and the value embeddings, in their tables' dtype (bf16 on CUDA)."""
        return norm(self.wte(idx)), {k: e(idx) for k, e in self.value_embeds.items()}

    def head(self, x, targets=None):
        """Logits (soft-capped, fp32), or the mean cross-entropy against targets."""
        logits = self.lm_head(norm(x)).float()
        logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    def forward(self, idx, targets=None):
        T = idx.size(1)
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x0, ves = self.embed(idx)
        x = x0.clone()   # not x0 itself: an aliased input would make the first block a graph of its own
        for i, block in enumerate(self.blocks):
            x = block(x, x0, self.resid_lambdas[i], self.x0_lambdas[i], ves.get(str(i)), cos, sin, self.masks[i])
        return self.head(x, targets)

    def compile_regions(self):
        """
        torch.compile each block rather than the whole model: the blocks share one compiled graph
        (a few if their windows or value embeddings differ), so compiling costs about one block, not
        DEPTH of them, and a warm start replays fewer graphs. Block boundaries cost little: the
        residual stream is written out between blocks anyway.
        """
        for block in self.blocks:
            block.compile(dynamic=False)
        self.embed = torch.compile(self.embed, dynamic=False)
        self.head = torch.compile(self.head, dynamic=False)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self):
        """6 x non-embedding params (forward + backward matmuls) + the attention score/value term."""
        embeddings = self.wte.weight.numel() + sum(e.weight.numel() for e in self.value_embeds.values())
        attn = sum(12 * self.dim * min(w, self.seq_len) for w in self.windows)   # 12 x heads x head_dim x window
        return 6 * (self.num_params() - embeddings) + attn


# Polar Express (Amsel et al., 2025): per-iteration coefficients (a, b, c) of X <- aX + b(XX^T)X + c(XX^T)^2 X,
# each chosen for the worst case of the iteration before. Closer to U V^T in 5 steps than one fixed quintic.
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def orthogonalise(G):
    """U V^T of each matrix U S V^T in a stack, approximately and in bf16 (the fast matmul dtype)."""
    X = G.bfloat16()
    tall = G.size(-2) > G.size(-1)
    if tall:   # iterate on the wide side: X X^T is then the smaller Gram matrix
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)   # spectral norm safely below 1, as the coefficients assume
    for a, b, c in POLAR_EXPRESS:
        A = X @ X.mT
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)
        X = torch.baddbmm(X, B, X, beta=a)
    return X.mT if tall else X


class Muon(torch.optim.Optimizer):
    """
    Muon for a model's matrices: Nesterov momentum, orthogonalised by Polar Express, scaled per neuron
    by NorMuon's running second moment (keeping the update's norm), lr x sqrt(max(1, rows/cols)), with
    cautious weight decay (only where the update already pulls the weight towards 0). Batched: the
    matrices of one shape are stacked so one chain of kernels serves them all.
    The momentum and weight decay are per step, from the group (the training loop schedules them).
    """

    def __init__(self, params, lr, momentum=0.95, beta2=0.95, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, beta2=beta2, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            by_shape = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_shape.setdefault(tuple(p.shape), []).append(p)
            for (rows, cols), params in by_shape.items():
                grads = torch.stack([p.grad for p in params])
                state = self.state[params[0]]   # the stacked state of this shape lives with its first matrix
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(grads)
                    # one second moment per neuron: per row of a tall matrix, per column of a wide one
                    state["second"] = grads.new_zeros((len(params), rows, 1) if rows >= cols else (len(params), 1, cols))
                state["momentum"].lerp_(grads, 1 - group["momentum"])
                update = orthogonalise(grads.lerp_(state["momentum"], group["momentum"])).float()
                per_neuron = update.square().mean(dim=-1 if rows >= cols else -2, keepdim=True)
                state["second"].lerp_(per_neuron, 1 - group["beta2"])
                scaled = update * state["second"].clamp_min(1e-10).rsqrt()
                scaled *= update.norm(dim=(-2, -1), keepdim=True) / scaled.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-10)
                lr = group["lr"] * max(1, rows / cols) ** 0.5
                weights = torch.stack(params)
                decay = (scaled * weights >= 0) * weights   # cautious: decay only where the update agrees
                weights.sub_(lr * (scaled + group["weight_decay"] * decay))
                torch._foreach_copy_(params, list(weights.unbind(0)))


# -----------------------------------------------------------------------------
# Setup

torch.manual_seed(H.seed)
device = H.device
model_dim = -(-DEPTH * ASPECT_RATIO // HEAD_DIM) * HEAD_DIM
model = GPT(H.vocab_size, H.seq_len, DEPTH, model_dim, HEAD_DIM).to(device)
model.init_weights()
if device == "cuda":   # bf16 embeddings make the residual stream bf16: half the memory traffic between blocks
    for emb in [model.wte, *model.value_embeds.values()]:
        emb.to(torch.bfloat16)
fast = device == "cuda" and COMPILE   # the fast path: compiled, with FlexAttention for the windows
model.setup_attention(device, flex=fast)
if fast:
    model.compile_regions()
num_params = model.num_params()
flops_per_token = model.flops_per_token()

tokens_per_pass = DEVICE_BATCH_SIZE * H.seq_len
assert TOTAL_BATCH_TOKENS % tokens_per_pass == 0, "TOTAL_BATCH_TOKENS must be a multiple of DEVICE_BATCH_SIZE * seq_len"
grad_accum = TOTAL_BATCH_TOKENS // tokens_per_pass

# AdamW learning rates were tuned at width 768; scale them as 1/sqrt(width) around it.
adam_scale = (model_dim / 768) ** -0.5
matrices = [p for b in model.blocks for p in b.parameters() if p.ndim == 2]
block_vectors = [p for b in model.blocks for p in b.parameters() if p.ndim < 2]   # none here; an edit may add gains
adam = torch.optim.AdamW([
    {"params": [model.wte.weight, *[e.weight for e in model.value_embeds.values()]], "lr": EMBEDDING_LR * adam_scale},
    {"params": [model.lm_head.weight], "lr": UNEMBEDDING_LR * adam_scale},
    # the residual scalars scale the whole stream: a hundredth of the scalar rate keeps it steady
    {"params": [model.resid_lambdas], "lr": SCALAR_LR * 0.01},
    {"params": [model.x0_lambdas], "lr": SCALAR_LR, "betas": (0.96, ADAM_BETAS[1])},
    {"params": block_vectors, "lr": SCALAR_LR},
], betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0, fused=device == "cuda")
muon = Muon(matrices, lr=MATRIX_LR, beta2=MUON_BETA2)
optimizers = [adam, muon]
for opt in optimizers:
    for group in opt.param_groups:
        group["initial_lr"] = group["lr"]

autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
loader = H.train_loader(DEVICE_BATCH_SIZE)   # batch order from H.seed
untimed = UNTIMED_STEPS if device == "cuda" else 1


def muon_momentum(step):
    start, end, steps = MUON_MOMENTUM
    return start + (end - start) * min(step / steps, 1.0)


def lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return (progress + 1e-8) / WARMUP_RATIO
    if progress > 1.0 - WARMDOWN_RATIO:
        cooldown = (1.0 - progress) / WARMDOWN_RATIO
        return FINAL_LR_FRAC + (1.0 - FINAL_LR_FRAC) * max(cooldown, 0.0)
    return 1.0


print(f"model: {num_params / 1e6:.1f}M params, depth {DEPTH}, dim {model_dim}, windows {model.windows}")
print(f"batch: {TOTAL_BATCH_TOKENS:,} tokens/step = {DEVICE_BATCH_SIZE} rows x {H.seq_len} x {grad_accum} accum")
print(f"budget: {H.time_budget:.0f}s of training on {device}, after {untimed} untimed steps "
      f"(setup took {time.time() - H.started_at:.1f}s)")

# -----------------------------------------------------------------------------
# Training loop: run until the timed training reaches the budget

step, training_seconds, startup_seconds, smooth_loss = 0, 0.0, 0.0, None
max_loss = 2 * math.log(H.vocab_size)   # twice the loss of a uniform guess: training has diverged
while True:
    if step == untimed:
        startup_seconds = time.time() - H.started_at
    t0 = time.time()
    progress = min(training_seconds / H.time_budget, 1.0)
    if MAX_STEPS:
        progress = max(progress, max(step - untimed, 0) / MAX_STEPS)
    # untimed warm-up steps compile and warm the caches but must not learn: free training time
    # would reward huge batches (one untimed step could be most of the run)
    lrm = lr_multiplier(progress) if step >= untimed else 0.0
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lrm
    for group in muon.param_groups:
        group["momentum"] = muon_momentum(max(step - untimed, 0))
        group["weight_decay"] = WEIGHT_DECAY * (1 - progress)
    for _ in range(grad_accum):
        x, y = next(loader)
        with autocast:
            loss = model(x, y)
        (loss / grad_accum).backward()
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    loss_value = loss.item()   # also synchronises, so dt below is real
    if not math.isfinite(loss_value) or loss_value > max_loss:
        H.fail("nan", f"loss is {loss_value} at step {step}: training diverged")
    dt = time.time() - t0
    if step >= untimed:
        training_seconds += dt
    if step == 0:
        gc.collect()
        gc.freeze()   # the GC scanning long-lived objects causes step-time spikes
        gc.disable()
    smooth_loss = loss_value if smooth_loss is None else 0.9 * smooth_loss + 0.1 * loss_value
    step += 1
    pct = 100 * min(training_seconds / H.time_budget, 1.0)
    print(f"step {step:05d} | {pct:5.1f}% | loss {smooth_loss:.4f} | lr x{lrm:.2f} | "
          f"dt {dt * 1000:.1f}ms | {TOTAL_BATCH_TOKENS / dt:,.0f} tok/s", flush=True)   # every step: jitter shows
    if step > untimed and (training_seconds >= H.time_budget or step - untimed == MAX_STEPS):
        break

timed_steps = step - untimed
mfu = 100 * flops_per_token * TOTAL_BATCH_TOKENS * timed_steps / training_seconds / H.peak_flops if H.peak_flops else 0.0
H.finish(model, training_seconds=training_seconds, num_steps=step,
         num_params=num_params, depth=DEPTH, mfu_percent=mfu, startup_seconds=startup_seconds)
