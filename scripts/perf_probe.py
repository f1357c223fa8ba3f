"""
Facts and microbenchmarks for the h100 profile's shapes (a development tool, GPU only):
software versions, matmul and copy ceilings, and attention kernels forward+backward at
B=64, H=4, T=2048, D=128 in bf16: SDPA backends, FlexAttention (full and sliding window, a few
kernel options) and FlashAttention-2 windows through varlen_attn. Prints one line per variant.

    python scripts/perf_probe.py [--quick]
"""

import inspect
import json
import sys
import time

import torch
import torch.nn.functional as F

B, H, T, D, W = 64, 4, 2048, 128, 1024
dev = "cuda"
results = {}


def timed(fn, iters=10, warmup=3):
    """Median ms of fn() with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def report(name, ms, flops=None, extra=""):
    tf = f"{flops / ms / 1e9:7.1f} TFLOP/s" if flops else ""
    print(f"{name:58s} {ms:8.3f} ms {tf} {extra}", flush=True)
    results[name] = {"ms": ms, "tflops": flops / ms / 1e9 if flops else None}


print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      torch.cuda.get_device_name(), flush=True)
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    pass
try:
    from torch.nn.attention.varlen import varlen_attn
    print("varlen_attn", inspect.signature(varlen_attn))
except Exception as e:   # noqa: BLE001
    varlen_attn = None
    print("varlen_attn missing:", e)
from torch.nn.attention import SDPBackend, sdpa_kernel
print("sdpa_kernel", inspect.signature(sdpa_kernel))
print("flash/mem/cudnn/math enabled:", torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled(),
      torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.math_sdp_enabled())
try:
    print("sdp priority order:", torch._C._get_sdp_priority_order())
except Exception as e:   # noqa: BLE001
    print("no sdp priority order:", e)

# ---- ceilings
x = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
report("matmul 8192^3 bf16", timed(lambda: x @ x), 2 * 8192**3)
a = torch.randn(B * T, 512, device=dev, dtype=torch.bfloat16)
w = torch.randn(2048, 512, device=dev, dtype=torch.bfloat16)
w5 = torch.randn(512, 512, device=dev, dtype=torch.bfloat16)
w15 = torch.randn(1536, 512, device=dev, dtype=torch.bfloat16)
wv = torch.randn(8192, 512, device=dev, dtype=torch.bfloat16)
report("matmul 131072x512 @ 512x2048 (c_fc fwd)", timed(lambda: a @ w.T), 2 * B * T * 512 * 2048)
report("matmul 131072x512 @ 512x512 (c_q fwd)", timed(lambda: a @ w5.T), 2 * B * T * 512 * 512)
report("matmul 131072x512 @ 512x1536 (qkv fused)", timed(lambda: a @ w15.T), 2 * B * T * 512 * 1536)
report("matmul 131072x512 @ 512x8192 (lm_head)", timed(lambda: a @ wv.T), 2 * B * T * 512 * 8192)
big = torch.empty(2 * 1024**3, dtype=torch.uint8, device=dev)
big2 = torch.empty_like(big)
ms = timed(lambda: big2.copy_(big))
print(f"copy 2 GiB: {ms:.3f} ms = {2 * big.numel() / ms / 1e6:.0f} GB/s (read+write)")
del x, big, big2

# ---- attention, fwd+bwd, the model's layout: (B, T, H, D) projections viewed as (B, H, T, D)
def qkv(dtype=torch.bfloat16):
    return [torch.randn(B, T, H, D, device=dev, dtype=dtype, requires_grad=True) for _ in range(3)]


def causal_flops(window):
    ctx = sum(min(i + 1, window) for i in range(T))
    return 4 * B * H * D * ctx   # forward: QK^T and PV


def attn_bench(name, f, window, layout="bhtd", dtype=torch.bfloat16):
    q, k, v = qkv(dtype)
    g = torch.randn(B, T, H, D, device=dev, dtype=torch.bfloat16)

    def fwd():
        if layout == "bhtd":
            return f(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        return f(q, k, v)

    def fwdbwd():
        out = fwd()
        out.backward(g)

    try:
        with torch.no_grad():
            ms_f = timed(fwd)
        ms_fb = timed(fwdbwd)
        fl = causal_flops(window)
        report(name + " fwd", ms_f, fl)
        report(name + " fwd+bwd", ms_fb, 3.5 * fl)   # FA-style backward: 2.5x the forward's matmuls
    except Exception as e:   # noqa: BLE001
        print(f"{name}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)


def sdpa_with(backend):
    def f(q, k, v):
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return f


attn_bench("sdpa default causal", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), T)
attn_bench("sdpa FLASH causal", sdpa_with(SDPBackend.FLASH_ATTENTION), T)
attn_bench("sdpa CUDNN causal", sdpa_with(SDPBackend.CUDNN_ATTENTION), T)
attn_bench("sdpa EFFICIENT causal", sdpa_with(SDPBackend.EFFICIENT_ATTENTION), T)

# which backend does the default pick? (kernel names)
from torch.profiler import ProfilerActivity, profile
q, k, v = (t.transpose(1, 2) for t in qkv())
with profile(activities=[ProfilerActivity.CUDA]) as p:
    F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    torch.cuda.synchronize()
print("default sdpa kernels:", sorted({e.name[:60] for e in p.events() if e.device_type == torch.autograd.DeviceType.CUDA})[:8])

if varlen_attn is not None:
    cu = torch.arange(0, (B + 1) * T, T, dtype=torch.int32, device=dev)

    def fa2(window):
        def f(q, k, v):
            out = varlen_attn(q.reshape(B * T, H, D), k.reshape(B * T, H, D), v.reshape(B * T, H, D), cu, cu, T, T,
                              window_size=(window - 1 if window < T else -1, 0))
            return out.view(B, T, H, D)
        return f
    attn_bench("varlen FA2 causal", fa2(T), T, layout="bthd")
    attn_bench("varlen FA2 window 1024", fa2(W), W, layout="bthd")
    attn_bench("varlen FA2 window 1024 (compiled)", torch.compile(fa2(W)), W, layout="bthd")

from torch.nn.attention.flex_attention import create_block_mask, flex_attention


def window_mask(b, h, q_idx, kv_idx):
    return (q_idx >= kv_idx) & (q_idx - kv_idx < W)


def causal_mask(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


bm_w = create_block_mask(window_mask, B=None, H=None, Q_LEN=T, KV_LEN=T, device=dev)
bm_c = create_block_mask(causal_mask, B=None, H=None, Q_LEN=T, KV_LEN=T, device=dev)
flex_c = torch.compile(flex_attention, dynamic=False)


def flex_with(bm, opts=None):
    return lambda q, k, v: flex_c(q, k, v, block_mask=bm, kernel_options=opts)


attn_bench("flex window 1024 default", flex_with(bm_w), W)
attn_bench("flex causal default", flex_with(bm_c), T)
quick = "--quick" in sys.argv
if not quick:
    for opts in [{"USE_TMA": True}]:
        attn_bench(f"flex window 1024 {json.dumps(opts)}", flex_with(bm_w, opts), W)

# does flex follow autocast with fp32 inputs (what the template handed it before the cast)?
q, k, v = (t.transpose(1, 2) for t in qkv(torch.float32))
with torch.autocast("cuda", dtype=torch.bfloat16):
    try:
        out = flex_c(q, k, v, block_mask=bm_w)
        print("flex under autocast with fp32 q/k/v -> output dtype", out.dtype, flush=True)
        with torch.no_grad():
            report("flex window 1024 fp32 inputs under autocast fwd", timed(lambda: flex_c(q, k, v, block_mask=bm_w)),
                   causal_flops(W))
    except Exception as e:   # noqa: BLE001
        print("flex fp32 under autocast FAILED", type(e).__name__, str(e)[:200])

# numerical agreement: FA2 window vs flex window vs boolean-mask SDPA (fp32 reference)
if varlen_attn is not None:
    torch.manual_seed(0)
    q, k, v = [torch.randn(2, T, H, D, device=dev, dtype=torch.bfloat16) for _ in range(3)]
    cu2 = torch.arange(0, 3 * T, T, dtype=torch.int32, device=dev)
    o_fa = varlen_attn(q.reshape(-1, H, D), k.reshape(-1, H, D), v.reshape(-1, H, D), cu2, cu2, T, T,
                       window_size=(W - 1, 0)).view(2, T, H, D)
    bm2 = create_block_mask(window_mask, B=None, H=None, Q_LEN=T, KV_LEN=T, device=dev)
    o_fx = flex_c(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=bm2).transpose(1, 2)
    pos = torch.arange(T, device=dev)
    m = (pos[None, :] <= pos[:, None]) & (pos[:, None] - pos[None, :] < W)
    ref = F.scaled_dot_product_attention(*(t.transpose(1, 2).double() for t in (q, k, v)), attn_mask=m).transpose(1, 2)
    for name, o in (("FA2 window", o_fa), ("flex window", o_fx)):
        print(f"{name} vs fp64 boolean-mask reference: rel err {((o.double() - ref).norm() / ref.norm()).item():.2e}")

print("PROBE_JSON", json.dumps(results))
