"""
Write variants of nanochat/train.py for measurement (each a small, named source edit) into DIR.

    python scripts/perf/make_variants.py DIR
"""

import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[2] / "nanochat" / "train.py"

QKV_OLD = '''        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
'''
QKV_NEW = '''        w = torch.cat([self.c_q.weight, self.c_k.weight, self.c_v.weight])
        q, k, v = F.linear(x, w).view(B, T, 3, self.n_head, self.head_dim).unbind(2)
'''
CAP_OLD = "        logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)\n"
CAP_NEW = "        logits = LOGIT_SOFTCAP * (2 * torch.sigmoid(logits * (2 / LOGIT_SOFTCAP)) - 1)\n"
FP32 = [('autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda"',
         'autocast = torch.autocast("cuda", enabled=False) if device == "cuda"'),
        ("COMPILE = True ", "COMPILE = False")]

EMULATE = [("from nanochat.prepare import load_harness\n",
            "from nanochat.prepare import load_harness\nimport torch._inductor.config\n"
            "torch._inductor.config.emulate_precision_casts = True   # round intermediates to bf16 as eager does\n")]
WHOLE_MODEL = [("    model.compile_regions()\n", "    model.forward = torch.compile(model.forward, dynamic=False)   # one graph\n")]

X0_BF16 = [("        return norm(self.wte(idx)), {k: e(idx) for k, e in self.value_embeds.items()}\n",
            "        return norm(self.wte(idx)).bfloat16(), {k: e(idx) for k, e in self.value_embeds.items()}\n"),
           ("        x = x0.clone()   # not x0", "        x = x0.float()   # not x0")]
BF16_RESID = X0_BF16[:1]   # x0 in bf16 and x = x0.clone(): under autocast every residual add then stays bf16
NESTED = [("    model.compile_regions()\n",
           "    Block.forward = torch.compiler.nested_compile_region(Block.forward)\n"
           "    model.forward = torch.compile(model.forward, dynamic=False)   # one graph, blocks traced once\n")]
COORD = [("from nanochat.prepare import load_harness\n",
          "from nanochat.prepare import load_harness\nimport torch._inductor.config\n"
          "torch._inductor.config.coordinate_descent_tuning = True   # tune each fused kernel's launch config\n")]
AUTOTUNE = [("            block.compile(dynamic=False)\n",
             "            block.compile(dynamic=False, mode=\"max-autotune-no-cudagraphs\")   # Triton GEMMs, fused epilogues\n")]

VARIANTS = {
    "qkv": [(QKV_OLD, QKV_NEW)],             # one matmul for q, k and v
    "sigcap": [(CAP_OLD, CAP_NEW)],          # the same soft-cap, through sigmoid instead of tanh
    "qkv_sigcap": [(QKV_OLD, QKV_NEW), (CAP_OLD, CAP_NEW)],
    "fp32": FP32,                             # the reference: eager, fp32 activations and matmuls
    "emulate": EMULATE,                       # compiled, with eager's bf16 rounding of intermediates
    "whole": WHOLE_MODEL,                     # compiled as one graph instead of per block
    "x0bf16": X0_BF16,                        # the embedding every block mixes in, read as bf16
    "nested": NESTED,                         # one graph, with the blocks as nested compile regions
    "coord": COORD,                           # inductor's coordinate-descent tuning of kernel configs
    "autotune": AUTOTUNE,                     # max-autotune for the block graphs
    "x0bf16_coord": X0_BF16 + COORD,
    "bf16resid": BF16_RESID,                  # the whole residual stream in bf16 (call 6's template)
}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base = TEMPLATE.read_text()
    for name, edits in VARIANTS.items():
        text = base
        for old, new in edits:
            if text.count(old) != 1:
                raise SystemExit(f"variant {name}: the template has {text.count(old)} copies of {old[:50]!r}")
            text = text.replace(old, new)
        (out / f"train_{name}.py").write_text(text)
        print(f"wrote {out / f'train_{name}.py'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
