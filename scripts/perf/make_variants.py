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

VARIANTS = {
    "qkv": [(QKV_OLD, QKV_NEW)],             # one matmul for q, k and v
    "sigcap": [(CAP_OLD, CAP_NEW)],          # the same soft-cap, through sigmoid instead of tanh
    "qkv_sigcap": [(QKV_OLD, QKV_NEW), (CAP_OLD, CAP_NEW)],
    "fp32": FP32,                             # the reference: eager, fp32 activations and matmuls
    "emulate": EMULATE,                       # compiled, with eager's bf16 rounding of intermediates
    "whole": WHOLE_MODEL,                     # compiled as one graph instead of per block
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
