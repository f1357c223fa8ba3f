"""
A training process started before it is needed: it does the slow, experiment-independent part of
a run (importing torch and dynamo; for a GPU profile, also inductor and Triton, the CUDA context and a tiny
compile) while the agent is still thinking, then waits. On one line on stdin, `go <unix time> [seed]`, it
runs train.py as `python train.py` would, from its cwd, counting the run's total_seconds from that
time, with H.seed = seed (the seed is only known once the run is asked for).

    python -m nanochat.prestart train.py      # then write "go 1764000000.0 7\n" to its stdin

The supervisor (tools/supervisor.py) keeps one such spare process per campaign; nanochat.bench
uses it to measure the overhead an experiment really adds. train.py is read only at `go`, so the
agent's latest edit is what runs. EOF on stdin without `go`: exit quietly (the spare was not needed).
"""

import os
import runpy
import sys
import time
from pathlib import Path

GO = "go"
READY_ENV = "NANOCHAT_READY_FILE"     # touched once the warm-up is done (the bench waits on it)


def warm_up() -> bool:
    """Everything a run needs before train.py's own code: imports, the compile caches' location,
    and, for a profile that trains on the GPU, the CUDA context and cuBLAS, and the compiler stack
    (one tiny compiled function). Returns whether there was a GPU to set up: never for the cpu
    profile, even where a GPU is visible."""
    from nanochat import prepare   # torch, numpy, tokenizers
    device = None
    try:
        config = prepare.resolve_config([])
        prepare.use_compile_cache(config.compile_cache)
        device = config.resolved_profile().device
    except Exception:   # no (valid) harness config here: train.py will report that itself
        pass
    import torch
    import torch._dynamo  # noqa: F401  (torch.export in H.finish, torch.compile, create_block_mask)
    import torch.nn.attention.flex_attention  # noqa: F401  (create_block_mask, imported on first use)
    if device == "cpu" or not torch.cuda.is_available():
        return False    # no compiler: the template compiles only on a GPU (inductor's import is ~1 s of CPU)
    import torch._inductor.compile_fx  # noqa: F401
    torch.cuda.init()
    a = torch.ones(64, 64, device="cuda", dtype=torch.bfloat16)
    (a @ a).sum().item()                                     # cuBLAS handle and workspace
    torch.compile(lambda t: (t * 2).sin(), dynamic=False)(a).sum().item()   # inductor + Triton up
    torch._dynamo.reset()                                    # leave no trace in dynamo's caches
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m nanochat.prestart TRAIN_FILE  (then 'go <unix time> [seed]' on stdin)", file=sys.stderr)
        return 2
    train_file = argv[0]
    t0 = time.time()
    cuda = warm_up()
    ready = time.time()
    if os.environ.get(READY_ENV):
        Path(os.environ[READY_ENV]).write_text(f"{ready - t0:.3f}\n")
    line = sys.stdin.readline().split()
    if not line or line[0] != GO:
        return 0
    started = float(line[1]) if len(line) > 1 else time.time()
    from nanochat.config import SEED_ENV, STARTED_ENV
    os.environ[STARTED_ENV] = repr(started)
    if len(line) > 2:
        os.environ[SEED_ENV] = line[2]
    waited = started - ready
    print(f"[prestart] warm-up (imports{', CUDA, compiler' if cuda else ''}) took {ready - t0:.1f}s, done "
          + (f"{waited:.1f}s before this run was asked for" if waited >= 0
             else f"{-waited:.1f}s after it (counted in this run's overhead)"), flush=True)
    sys.argv = [train_file]
    runpy.run_path(train_file, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
