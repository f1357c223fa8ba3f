"""The frozen harness: metric, packing, tokenizer, and real train.py runs on the CPU."""

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from nanochat import prepare
from nanochat.prepare import HarnessConfig, check_causal, evaluate_bpb, pack_rows

from nanochat.config import SUMMARY_ENV, SUMMARY_KEYS


def _eval_targets(data, seq_len):
    rows = data.val[data.eval_starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)
    return rows[:, 1:]


class Uniform(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, x):
        return torch.zeros(*x.shape, self.vocab)


class Oracle(torch.nn.Module):
    """Knows the validation rows: puts a huge logit on the true next token."""

    def __init__(self, data, seq_len, vocab):
        super().__init__()
        rows = data.val[data.eval_starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)
        self.next = {tuple(r[:-1]): r[1:] for r in rows}
        self.vocab = vocab

    def forward(self, x):
        out = torch.full((*x.shape, self.vocab), -50.0)
        for b, row in enumerate(x.tolist()):
            out[b, torch.arange(x.shape[1]), torch.from_numpy(self.next[tuple(row)])] = 50.0
        return out


def test_uniform_logits_give_log2_vocab_per_token(cpu_data):
    config, data = cpu_data
    p = config.resolved_profile()
    vocab = data.meta["vocab_size"]
    y = _eval_targets(data, p.seq_len)
    nbytes = data.token_bytes[y]
    counted = nbytes > 0                      # special tokens excluded from both sums
    expected = math.log2(vocab) * counted.sum() / nbytes.sum()
    got = evaluate_bpb(Uniform(vocab), data, p.seq_len, batch_size=7, device="cpu")  # ragged last batch
    assert got == pytest.approx(expected, rel=1e-6)   # float32 per-token nats
    assert (y == data.meta["bos_id"]).any(), "the check is only meaningful if some targets are BOS"


def test_oracle_model_scores_about_zero(cpu_data):
    config, data = cpu_data
    p = config.resolved_profile()
    got = evaluate_bpb(Oracle(data, p.seq_len, data.meta["vocab_size"]), data, p.seq_len, 16, "cpu")
    assert 0 <= got < 1e-6


def test_finish_reports_how_often_the_train_split_was_read(cpu_data, capsys, tmp_path, monkeypatch):
    config, data = cpu_data
    monkeypatch.setenv(SUMMARY_ENV, str(tmp_path / "result.json"))
    monkeypatch.delenv("NANOCHAT_HANDOFF", raising=False)   # by hand: finish scores the model itself
    h = prepare.Harness(config, data)
    loader = h.train_loader(batch_size=8, seed=0)
    per_batch = 8 * h.seq_len
    stats = dict(training_seconds=1.0, num_steps=1, num_params=0, depth=0, mfu_percent=0.0, startup_seconds=0.0)

    for _ in range(len(data.train) // per_batch // 2):   # half a pass: no note
        next(loader)
    summary = h.finish(Uniform(h.vocab_size), **stats)
    assert summary["train_passes"] == pytest.approx(loader.tokens_served / len(data.train), abs=0.01)
    assert 0.3 < summary["train_passes"] < 0.6
    assert "memorising" not in capsys.readouterr().out

    while loader.tokens_served <= 2.5 * len(data.train):   # past MEMORISE_PASSES: the run says so
        next(loader)
    summary = h.finish(Uniform(h.vocab_size), **stats)
    out = capsys.readouterr().out
    assert summary["train_passes"] > prepare.MEMORISE_PASSES
    assert f"{summary['train_passes']:.1f} times" in out and "memorising" in out
    assert out.index("memorising") < out.index("\n---\n")   # above the summary block, which stays parseable
    assert json.loads((tmp_path / "result.json").read_text())["train_passes"] == summary["train_passes"]


def test_causality_probe_tells_a_peeking_model(cpu_data):
    config, data = cpu_data
    p = config.resolved_profile()
    vocab = data.meta["vocab_size"]
    emb = torch.nn.Embedding(vocab, vocab)

    def causal(x):          # depends on the current token only
        return emb(x)

    def peeking(x):          # adds the next token's embedding: sees the future
        e = emb(x)
        return e + torch.roll(e, -1, dims=1)

    assert check_causal(causal, data, p.seq_len, 4, "cpu") == 0.0
    assert check_causal(peeking, data, p.seq_len, 4, "cpu") > 0.1


def test_packing_rows_start_with_bos_no_padding_deterministic(cpu_data):
    config, data = cpu_data
    T, bos = 256, data.meta["bos_id"]
    a = pack_rows(data.train, data.train_starts, T, 64, np.random.default_rng(7))
    b = pack_rows(data.train, data.train_starts, T, 64, np.random.default_rng(7))
    c = pack_rows(data.train, data.train_starts, T, 64, np.random.default_rng(8))
    assert a.shape == (64, T + 1)
    assert (a[:, 0] == bos).all()
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.max() < data.meta["vocab_size"] and a.min() >= 0
    # every row is a contiguous run of the packed corpus stream: no padding was inserted
    stream = np.asarray(data.train)
    for row in a[:8]:
        starts = np.flatnonzero(stream[: len(stream) - T] == row[0])
        assert any(np.array_equal(stream[s:s + T + 1], row) for s in starts)
    # rows hold several documents back to back (packing), each one opened by BOS
    assert (a[:, 1:] == bos).any()


def test_train_loader_is_deterministic(cpu_data):
    _, data = cpu_data
    l1 = prepare.TrainLoader(data, 256, 8, "cpu", seed=3)
    l2 = prepare.TrainLoader(data, 256, 8, "cpu", seed=3)
    for _ in range(3):
        (x1, y1), (x2, y2) = next(l1), next(l2)
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert torch.equal(x1[:, 1:], y1[:, :-1])


def test_tokenizer_round_trip_unicode(cpu_data):
    _, data = cpu_data
    tok = data.tokenizer
    text = "Grüße 🚀 naïve — 日本語 \t\n  code: def f(x): return x**2  # ≤ ∑ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert data.token_bytes[ids].sum() == len(text.encode("utf-8"))
    assert data.token_bytes[tok.bos_id] == 0


def test_prepare_is_cached_and_idempotent(cpu_data, capsys):
    config, data = cpu_data
    again = prepare.prepare_data(config)
    assert again.dir == data.dir
    assert "building" not in capsys.readouterr().out


def test_bad_data_path_is_a_clear_error(tmp_path):
    with pytest.raises(prepare.HarnessError, match="does not exist"):
        prepare.resolve_corpus(str(tmp_path / "nope"), tmp_path)
    with pytest.raises(prepare.HarnessError, match="unknown profile"):
        HarnessConfig(profile="tpu").resolved_profile()


def test_cpu_runs_use_every_core_unless_omp_num_threads_caps_them(monkeypatch):
    monkeypatch.setattr(prepare.os, "cpu_count", lambda: 6)
    for value, threads in [(None, 6), ("2", 2), ("3,1", 3), ("0", 6), ("many", 6)]:
        if value is None:
            monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        else:
            monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert prepare.cpu_threads() == threads, value


def test_render_applies_profile_constants():
    text = prepare.render_train_py("cpu")
    for name, value in prepare.PROFILES["cpu"].train_overrides.items():
        assert f"\n{name} = {value!r}" in text
    compile(text, "train.py", "exec")


# -----------------------------------------------------------------------------
# Real runs of the template on the CPU

def _workspace(tmp_path, config, text=None):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "train.py").write_text(text or prepare.render_train_py("cpu"))
    HarnessConfig(profile="cpu", data=config.data, time_budget=2, cache_dir=config.cache_dir).write(ws / "harness.json")
    return ws


def _run(ws, result):
    env = {**os.environ, SUMMARY_ENV: str(result),
           "PYTHONPATH": str(Path(prepare.__file__).parent.parent)}
    return subprocess.run([sys.executable, "train.py"], cwd=ws, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_real_cpu_run_reports_every_summary_key(tmp_path, cpu_data):
    config, _ = cpu_data
    ws = _workspace(tmp_path, config)
    r = _run(ws, tmp_path / "result.json")
    assert r.returncode == 0, r.stderr[-2000:]
    block = r.stdout.split("\n---\n")[-1]
    summary = dict(line.split(":", 1) for line in block.strip().splitlines())
    assert sorted(summary) == sorted(SUMMARY_KEYS)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "ok"
    assert float(summary["val_bpb"]) == pytest.approx(result["val_bpb"], abs=1e-6)
    assert result["training_seconds"] >= 2 and result["num_steps"] > 1
    # every step consumed exactly one optimizer batch of tokens (gradient accumulation included)
    batch = prepare.PROFILES["cpu"].train_overrides["TOTAL_BATCH_TOKENS"]
    assert result["tokens_served"] == result["num_steps"] * batch
    assert result["train_passes"] == pytest.approx(result["tokens_served"] / len(cpu_data[1].train), abs=0.01)
    assert 0 < result["val_bpb"] < 20 and result["eval_seconds"] > 0 and result["export_seconds"] >= 0


@pytest.mark.slow
def test_injected_nan_fails_loudly(tmp_path, cpu_data):
    config, _ = cpu_data
    text = prepare.render_train_py("cpu")
    assert text.count("loss = model(x, y)") == 1
    text = text.replace("loss = model(x, y)", "loss = model(x, y) * float('nan')")
    ws = _workspace(tmp_path, config, text)
    r = _run(ws, tmp_path / "result.json")
    assert r.returncode == prepare.FAIL_EXIT_CODE
    assert "FAIL: nan" in r.stdout and not (tmp_path / "result.json").exists()


def template_model_code(monkeypatch, config, **constants):
    """The template's model definitions (everything above its Setup section) as a namespace, with
    the harness loaded for `config` and some constants replaced."""
    source = prepare.TEMPLATE_PATH.read_text().split("# Setup", 1)[0]
    monkeypatch.setattr(sys, "argv", ["train.py", "--profile", config.profile, "--data", config.data,
                                      "--cache-dir", config.cache_dir])
    module = types.ModuleType("template_under_test")   # dynamo looks functions' modules up by name
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(source, "train.py", "exec"), module.__dict__)
    module.__dict__.update(constants)
    return module.__dict__


@pytest.mark.slow
def test_compiled_regions_compute_what_the_eager_model_does(monkeypatch, cpu_data):
    """The fast path's per-block compilation (CUDA, COMPILE = True) must not change the model's
    function: same loss and gradients as eager, on the CPU's inductor backend, with sliding-window
    and full blocks and value embeddings; and blocks of one kind share one compiled graph."""
    import copy
    from torch._dynamo.utils import counters
    config, data = cpu_data
    ns = template_model_code(monkeypatch, config, WINDOW_PATTERN="SL", SHORT_WINDOW=16)
    torch.manual_seed(0)
    eager = ns["GPT"](ns["H"].vocab_size, 64, 4, 64, 16)   # windows 16/64/16/64, value embeddings on blocks 1, 3
    eager.init_weights()
    with torch.no_grad():   # give every matrix a gradient (the output projections start at zero)
        for block in eager.blocks:
            block.attn.c_proj.weight.normal_(std=0.05)
            block.mlp.c_proj.weight.normal_(std=0.05)
    compiled = copy.deepcopy(eager)
    for m in (eager, compiled):
        m.setup_attention("cpu", flex=False)
    torch._dynamo.reset()
    counters.clear()
    compiled.compile_regions()
    x, y = next(ns["H"].train_loader(4, seed=3))
    x, y = x[:, :64].contiguous(), y[:, :64].contiguous()
    losses = []
    for m in (eager, compiled):
        loss = m(x, y)
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-6), name
    assert counters["stats"]["unique_graphs"] == 4   # embed, head, and one graph per kind of block (not 4)
    torch._dynamo.reset()
