"""FlexAttention kernel options for the h100 profile's sliding-window layers (B=64, H=4, T=2048, D=128,
window 1024, bf16): forward tiles timed forward-only, backward tiles timed forward+backward with the
default forward. Prints a table and writes the best combination as a Python literal to argv[1]."""
import json, sys
import torch
import torch._dynamo
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

torch._dynamo.config.recompile_limit = 64
B, H, T, D, W = 64, 4, 2048, 128, 1024
def win(b, h, q, kv):
    return (q >= kv) & (q - kv < W)
bm = create_block_mask(win, B=None, H=None, Q_LEN=T, KV_LEN=T, device="cuda")
q, k, v = [torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)]
g = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)

def timed(fn, iters=10, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]

def run(opts, backward):
    torch._dynamo.reset()
    f = torch.compile(flex_attention, dynamic=False)
    if backward:
        return timed(lambda: f(q, k, v, block_mask=bm, kernel_options=opts).backward(g))
    with torch.no_grad():
        return timed(lambda: f(q, k, v, block_mask=bm, kernel_options=opts))

fwd = [None, dict(BLOCK_M=128, BLOCK_N=128, num_stages=2, num_warps=8), dict(BLOCK_M=128, BLOCK_N=64, num_stages=3, num_warps=4),
       dict(BLOCK_M=64, BLOCK_N=128, num_stages=3, num_warps=4), dict(BLOCK_M=128, BLOCK_N=64, num_stages=4, num_warps=8),
       dict(BLOCK_M=128, BLOCK_N=128, num_stages=3, num_warps=8), dict(BLOCK_M=128, BLOCK_N=64, num_stages=3, num_warps=8, USE_TMA=True)]
bwd = [None] + [dict(BLOCK_M1=m1, BLOCK_N1=n1, BLOCK_M2=n1, BLOCK_N2=m1, num_stages=s, num_warps=w) for m1, n1, s, w in
                [(64, 128, 2, 8), (64, 64, 3, 4), (64, 64, 2, 4), (32, 128, 3, 4), (64, 128, 3, 4), (32, 64, 3, 4), (64, 64, 4, 4)]]
res = {"fwd": [], "bwd": []}
for o in fwd:
    opts = {f"fwd_{k}": v for k, v in o.items()} if o else None
    try:
        ms = run(opts, False)
    except Exception as e:  # noqa: BLE001
        ms = float("inf"); print("fwd", o, "FAILED", type(e).__name__, str(e)[:150])
    res["fwd"].append((o, ms)); print(f"fwd {json.dumps(o):90s} {ms:.3f} ms", flush=True)
for o in bwd:
    opts = {f"bwd_{k}": v for k, v in o.items()} if o else None
    try:
        ms = run(opts, True)
    except Exception as e:  # noqa: BLE001
        ms = float("inf"); print("bwd", o, "FAILED", type(e).__name__, str(e)[:150])
    res["bwd"].append((o, ms)); print(f"fwd+bwd {json.dumps(o):86s} {ms:.3f} ms", flush=True)
bf = min(res["fwd"], key=lambda r: r[1]); bb = min(res["bwd"], key=lambda r: r[1])
best = {**({f"fwd_{k}": v for k, v in bf[0].items()} if bf[0] else {}), **({f"bwd_{k}": v for k, v in bb[0].items()} if bb[0] else {})}
combo = run(best or None, True) if best else bb[1]
print(f"best fwd {bf}, best bwd {bb}; combined fwd+bwd {combo:.3f} ms (default {res['bwd'][0][1]:.3f} ms)")
open(sys.argv[1], "w").write(repr(best or None))
