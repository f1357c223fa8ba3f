"""Where the seconds before train.py's first step go: the same calls, timed one by one."""
import time
T = [("python up", time.time())]
def mark(name):
    T.append((name, time.time()))
import torch; mark("import torch")
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention; mark("import flex_attention")
from torch.nn.attention.varlen import varlen_attn; mark("import varlen")
from nanochat.prepare import load_harness, _process_start_time; mark("import nanochat.prepare (numpy, pydantic)")
H = load_harness(); mark("load_harness (prepare_data from cache)")
torch.zeros(1, device="cuda"); mark("CUDA init")
m = torch.nn.Linear(512, 512).cuda(); mark("first module to cuda")
def win(b, h, q, kv):
    return (q >= kv) & (q - kv < 1024)
create_block_mask(win, B=None, H=None, Q_LEN=2048, KV_LEN=2048, device="cuda"); mark("create_block_mask #1")
for _ in range(5):
    create_block_mask(win, B=None, H=None, Q_LEN=2048, KV_LEN=2048, device="cuda")
mark("create_block_mask x5")
c = torch.compile(m); mark("torch.compile(model) wrapper")
import torch._inductor.compile_fx; mark("import inductor")
loader = H.train_loader(64, seed=42); x, y = next(loader); mark("first batch")
start = _process_start_time()
print(f"process start -> python up: {T[0][1] - start:.2f}s")
for (a, ta), (b, tb) in zip(T, T[1:]):
    print(f"{b:45s} {tb - ta:6.2f}s")
print(f"total since process start: {time.time() - start:.2f}s")
