"""
How far each training path's gradients are from an fp64 reference, on one batch of real data.

Runs train.py's model code (everything above its "# Setup" section) three or more ways on the same
weights and rows: fp64 eager (the reference), bf16 eager (COMPILE = False) and bf16 compiled (the
fast path), and prints, per parameter group, the relative error ||g - g_ref|| / ||g_ref|| and the
cosine to the reference. A path whose errors stand out is the one whose numerics differ.
The zero-initialised output projections get small random weights first, so every matrix has a
gradient (at init most have none).

    python scripts/perf/grad_probe.py --profile h100 --data PATH [--train nanochat/train.py] [--rows 8]
"""

import argparse
import copy
import json
import sys
import types
from pathlib import Path

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--train", default="nanochat/train.py")
ap.add_argument("--rows", type=int, default=8)
ap.add_argument("--paths", default="eager-bf16,compiled-bf16,eager-fp32")
ap.add_argument("--out", default=None)
args, harness_argv = ap.parse_known_args()

source = Path(args.train).read_text()
head = source.split("# Setup", 1)[0]
sys.argv = ["train.py", *harness_argv]
module = types.ModuleType("train_probe")   # dynamo looks functions' modules up by name
sys.modules[module.__name__] = module
ns = module.__dict__
exec(compile(head, args.train, "exec"), ns)
H, GPT = ns["H"], ns["GPT"]
device = H.device
torch.manual_seed(0)
dim = -(-ns["DEPTH"] * ns["ASPECT_RATIO"] // ns["HEAD_DIM"]) * ns["HEAD_DIM"]
base = GPT(H.vocab_size, H.seq_len, ns["DEPTH"], dim, ns["HEAD_DIM"])
base.init_weights()
with torch.no_grad():
    for block in base.blocks:   # as if trained a little: every matrix gets a gradient
        block.attn.c_proj.weight.normal_(std=0.02)
        block.mlp.c_proj.weight.normal_(std=0.02)
    base.x0_lambdas.fill_(0.1)
x, y = next(H.train_loader(args.rows, seed=1))
x, y = x.to(device), y.to(device)


def group(name):
    for key in ("c_q", "c_k", "c_v", "attn.c_proj", "c_fc", "mlp.c_proj", "wte", "value_embeds", "lm_head", "lambdas", "ve_gate"):
        if key in name:
            return key
    return "other"


def run(path):
    model = copy.deepcopy(base).to(device)
    if path == "ref-fp64":
        model = model.double()
        ctx = torch.autocast(device, enabled=False)
    elif path == "eager-fp32":
        ctx = torch.autocast(device, enabled=False)
    else:
        ctx = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    compiled = path.startswith("compiled")
    model.setup_attention(device, flex=compiled and device == "cuda")
    if compiled:
        model.compile_regions()
    with ctx:
        loss = model(x, y)
    loss.backward()
    grads = {n: p.grad.double().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
ref_loss, ref = run("ref-fp64")
report = {"ref-fp64": {"loss": ref_loss}}
print(f"ref-fp64 loss {ref_loss:.6f}")
for path in args.paths.split(","):
    loss, grads = run(path)
    rows = {}
    for g in sorted({group(n) for n in ref}):
        names = [n for n in ref if group(n) == g]
        a = torch.cat([grads[n].flatten() for n in names])
        b = torch.cat([ref[n].flatten() for n in names])
        rel = float((a - b).norm() / b.norm().clamp(min=1e-30))
        cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
        rows[g] = {"rel_err": rel, "cos": cos}
    report[path] = {"loss": loss, "loss_err": loss - ref_loss, "groups": rows}
    print(f"\n{path}: loss {loss:.6f} ({loss - ref_loss:+.2e} vs ref)")
    for g, r in rows.items():
        print(f"  {g:<14} rel_err {r['rel_err']:.2e}  1-cos {1 - r['cos']:.2e}")
if args.out:
    Path(args.out).write_text(json.dumps(report, indent=1))
