"""
Does the handed-over graph score what the model itself scores? Trains the template's GPT for a few
steps by hand (no sandbox), then computes val_bpb on the live model and on the graph the scorer
would load (nanochat/handoff.py), and the causality probe on both. On a GPU this covers autocast
and the compiled regions.

    python scripts/check_handoff.py --profile h100 --data builtin --steps 50
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nanochat.config import HarnessConfig, render_train_py  # noqa: E402
from nanochat.handoff import export_model, load_forward  # noqa: E402
from nanochat.prepare import check_causal, evaluate_bpb, prepare_data, TrainLoader  # noqa: E402


def template_namespace(profile: str) -> dict:
    """The template's classes and constants, without running its training loop, as a real module
    (torch.compile looks its functions' globals up by module name)."""
    import importlib.util
    text = render_train_py(profile).split("# Setup")[0]
    text = text.replace("H = load_harness()", "").replace("from nanochat.prepare import load_harness", "")
    path = Path(tempfile.mkdtemp()) / "template_model.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("template_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["template_model"] = module
    spec.loader.exec_module(module)
    return vars(module)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="h100")
    ap.add_argument("--data", default="builtin")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--depth", type=int, default=4)
    args = ap.parse_args()
    config = HarnessConfig(profile=args.profile, data=args.data)
    p = config.resolved_profile()
    data = prepare_data(config)
    ns = template_namespace(args.profile)
    dim = args.depth * ns["ASPECT_RATIO"]
    model = ns["GPT"](int(data.meta["vocab_size"]), p.seq_len, args.depth, dim, ns["HEAD_DIM"]).to(p.device)
    model.init_weights()
    model.setup_attention(p.device, flex=p.device == "cuda")
    if p.device == "cuda":
        model.compile_regions()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = TrainLoader(data, p.seq_len, 8, p.device, seed=0)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if p.device == "cuda" else torch.autocast("cpu", enabled=False)
    for step in range(args.steps):
        x, y = next(loader)
        with amp:
            loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    print(f"trained {args.steps} steps, loss {loss.item():.3f}")
    model.eval()
    shape = (p.seq_len, p.eval_batch_size, p.device)
    t0 = time.time()
    live = evaluate_bpb(model, data, *shape)
    t_live = time.time() - t0
    with tempfile.TemporaryDirectory() as d:
        t0 = time.time()
        example = torch.zeros((p.eval_batch_size, p.seq_len), dtype=torch.long, device=p.device)
        export_model(model, example, Path(d))
        t_export = time.time() - t0
        forward = load_forward(Path(d), p.device)
        t0 = time.time()
        handed = evaluate_bpb(forward, data, *shape)
        t_handed = time.time() - t0
        leak = check_causal(forward, data, *shape)
    print(f"val_bpb live model {live:.6f} ({t_live:.1f}s), handed-over graph {handed:.6f} ({t_handed:.1f}s), "
          f"difference {abs(live - handed):.2e}; export {t_export:.1f}s; causal leak of the graph {leak:.2e}")
    return 0 if abs(live - handed) < 1e-3 * max(live, 1) and leak < 1e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
