"""tools/redact.py: the one redactor, and where the campaign uses it (LLM, tools, checkpoints)."""

import base64
import binascii
import json
import re
import sqlite3
import subprocess
import sys
import time
from typing import TypedDict

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from helpers_tools import SAMPLE_TRAIN, make_workspace
from tools import make_tools
from tools.redact import (
    _ASSIGNMENT_RULE,
    _KEY_RULES,
    _UPSTREAM_REWRITES,
    MASK,
    MODEL_OUTPUT_CHARS,
    Redactor,
    clip_for_model,
    encodings,
)

# 27 bytes: its base64 has a '+' and a '/' (so standard and URL-safe differ); cut by one and two
# bytes, the whole-secret encoding is padded.
CANARY = "canary-Zq8~xW4>Lp?-7f3a9b21"
CANARIES = [CANARY, CANARY[:-1], CANARY[:-2]]
B64_CHARS = re.compile(r"[A-Za-z0-9+/_-]+")
HEX_CHARS = re.compile(r"[0-9A-Fa-f]+")


def leaks(secret: str, text: str) -> list[str]:
    """Evidence of `secret` in `text`, found without the redactor's help: 6 characters of it in
    clear or reversed, or 5 of its bytes in anything that decodes as hex or base64 there."""
    raw = secret.encode()
    found = []
    for s, name in ((secret, "clear"), (secret[::-1], "reversed")):
        if any(s[i:i + 6] in text for i in range(len(s) - 5)):
            found.append(name)

    def has_bytes(data: bytes) -> bool:
        return any(raw[i:i + 5] in data for i in range(len(raw) - 4))

    for run in HEX_CHARS.findall(text):
        for start in (0, 1):
            chunk = run[start:]
            if has_bytes(binascii.unhexlify(chunk[:len(chunk) // 2 * 2])):
                found.append("hex")
    for run in B64_CHARS.findall(text):
        run = run.replace("-", "+").replace("_", "/")
        for start in range(4):
            chunk = run[start:]
            if has_bytes(base64.b64decode(chunk[:len(chunk) // 4 * 4])):
                found.append("base64")
    return found


def encoded_forms(secret: str) -> dict[str, str]:
    raw = secret.encode()
    forms = {"literal": secret, "reversed": secret[::-1], "hex": raw.hex(), "HEX": raw.hex().upper()}
    for name, enc in (("std", base64.b64encode), ("urlsafe", base64.urlsafe_b64encode)):
        forms[f"b64-{name}"] = enc(raw).decode()
        forms[f"b64-{name}-unpadded"] = enc(raw).decode().rstrip("=")
        # inside a longer base64 text: every alignment, and text after it too
        for before in range(6):
            for after in (0, 1, 2, 5):
                data = bytes(range(65, 65 + before)) + raw + b"\x00\xff\x10\x99\x42"[:after]
                forms[f"b64-{name}-in-text-{before}-{after}"] = enc(data).decode()
                forms[f"b64-{name}-in-text-{before}-{after}-unpadded"] = enc(data).decode().rstrip("=")
    return forms


def test_the_canary_spans_both_base64_alphabets_and_padding():
    raw = CANARY.encode()
    assert base64.b64encode(raw) != base64.urlsafe_b64encode(raw)
    assert any(base64.b64encode(c.encode()).endswith(b"=") for c in CANARIES)
    assert all(len(v) >= 8 for v in encodings(CANARY))


@pytest.mark.parametrize("secret", CANARIES)
def test_every_encoding_of_a_secret_is_masked_anywhere_in_text(secret):
    r = Redactor([secret])
    for name, form in encoded_forms(secret).items():
        text = f"log line: token={form}; next line\n{form}\n({form})"
        assert leaks(secret, text), f"{name}: the leak detector must see the unredacted form"
        out = r.text(text, assignments=False)
        assert leaks(secret, out) == [], f"{name}: {out!r}"
        assert MASK in out and out.startswith("log line: token=") and "; next line" in out, name


def test_dicts_lists_keys_and_what_is_not_secret():
    env = {"OPENAI_API_KEY": "sk-test-0123456789abcdef", "HF_TOKEN": CANARY, "GIT_PASSWORD": "short",
           "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin", "HOME": "/home/user-with-long-name"}
    r = Redactor.from_env(["explicit-secret-value"], env)
    assert set(r.secrets) == {"sk-test-0123456789abcdef", CANARY, "explicit-secret-value"}
    payload = {CANARY: [base64.b64encode(CANARY.encode()).decode(), 3, None, ("explicit-secret-value",)],
               "path": "/usr/bin:/bin and /home/user-with-long-name", "flag": "false"}
    assert r(payload) == {MASK: [MASK, 3, None, [MASK]], "path": "/usr/bin:/bin and /home/user-with-long-name",
                          "flag": "false"}
    # an object with .secrets(), like settings.credentials
    creds = type("Creds", (), {"secrets": lambda self: ["credential-value-123"]})()
    assert "credential-value-123" in Redactor.from_env(creds, {}).secrets
    assert Redactor.from_env(creds, {}).extended([CANARY]).text(f"{CANARY} credential-value-123") == "*** ***"


def test_key_shapes_and_the_assignment_rule_which_the_model_view_leaves_out():
    r = Redactor([CANARY])
    assert r.text("sk-live-abcdefghijkl and Bearer abc.def-ghi") == "*** and ***"
    assert r.text("curl https://user:hunter22@example.com/x") == "curl https://user:***@example.com/x"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert r.text(f"jwt {jwt}") == "jwt ***"
    code = "flops_per_token = model.flops_per_token()\nEOS_TOKEN = '<|endoftext|>'"
    assert r.text(code, assignments=False) == code          # what the model reads stays patchable
    assert r.text(code) == "flops_per_token = ***\nEOS_TOKEN = '***'"   # traces and logs: masked
    assert r.text(f"x = '{CANARY}'", assignments=False) == "x = '***'"  # secrets: always


def test_every_key_pattern_runs_in_linear_time_on_adversarial_runs():
    # LangSmith's KEY=value rule took 90 s on 40 000 characters of `a.a.a...` before its rewrite
    fragments = ["a.", "a-", "a", "sk-", "eyJ", "eyJa", "eyJa.", "TOKEN.", "token_", "TOKEN=", "a://", "a://b:",
                 "-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA ", "Bearer ", "authorization:", "sk_live_",
                 "lsv2_pt_", "xapp-1-", "AIza", "ghp_", " ", "=", "-----"]
    rules = _KEY_RULES + [_ASSIGNMENT_RULE]
    patterns = [r.pattern for r in rules] + [r.lower for r in rules if r.lower is not None]
    for fragment in fragments:
        text = fragment * (100_000 // len(fragment))
        for pattern in patterns:
            started = time.perf_counter()
            for _ in pattern.finditer(text):
                pass
            assert time.perf_counter() - started < 0.5, (fragment, pattern.pattern)


def test_the_rewritten_langsmith_rules_are_the_ones_langsmith_ships():
    langsmith = pytest.importorskip("langsmith.anonymizer")
    upstream = {rule["pattern"].pattern for rule in langsmith.DEFAULT_SECRET_RULES}
    stale = [p for p in _UPSTREAM_REWRITES if p not in upstream]
    assert stale == [], "langsmith changed these rules: review them (and test_every_key_pattern_runs_in_linear_time)"


def test_a_few_megabytes_redact_in_well_under_a_second():
    r = Redactor([CANARY, "sk-test-0123456789abcdef", "hf_abcdefghijklmnop", "correct horse battery"])
    line = "step 00123/01000 (12.30%) | loss: 3.214159 | lrm: 1.00 | dt: 123.45ms | tok/sec: 1,234,567\n"
    text = line * 20_000 + f"leak: {CANARY}\n" + line * 20_000       # 3.7 MB
    started = time.perf_counter()
    out = r.text(text)
    assert time.perf_counter() - started < 1.0
    assert len(out) == len(text) - len(CANARY) + len(MASK) and "leak: ***\n" in out and CANARY not in out


# -----------------------------------------------------------------------------
# Bytes: checkpoints and streams


def test_bytes_same_length_masks_every_encoding_and_keeps_the_length():
    r = Redactor([CANARY])
    data = ("ünïcode " + CANARY + " " + base64.b64encode(b"xy" + CANARY.encode()).decode()
            + " " + CANARY.encode().hex().upper()).encode()
    out = r.bytes_same_length(data)
    assert len(out) == len(data) and out.startswith("ünïcode ".encode())
    assert leaks(CANARY, out.decode()) == [] and leaks(CANARY, data.decode())
    assert r.bytes_same_length(b"nothing here") == b"nothing here"
    assert Redactor().bytes_same_length(bytearray(b"abc")) == b"abc"


def test_a_stream_masks_a_secret_split_across_chunks():
    r = Redactor([CANARY])
    data = b"".join(f"line {i}: {CANARY if i % 7 == 3 else 'nothing'}\n".encode() for i in range(200))
    for size in (1, 2, 5, 13, 64, 4096):
        stream = r.stream()
        out = b"".join(stream.feed(data[i:i + size]) for i in range(0, len(data), size)) + stream.flush()
        assert out == r.bytes_same_length(data) and CANARY.encode() not in out, size


def test_the_checkpoint_serializer_masks_and_stays_loadable(tmp_path):
    from langgraph.graph import END, START, StateGraph

    from graph.checkpoints import RedactingSerializer, redacting_saver
    r = Redactor([CANARY])
    serde = RedactingSerializer(r)
    value = {"note": f"key {CANARY}", "n": 65, "messages": [HumanMessage(f"b64 {base64.b64encode(CANARY.encode()).decode()}")]}
    kind, data = serde.dumps_typed(value)
    assert kind == "msgpack" and CANARY.encode() not in data
    back = serde.loads_typed((kind, data))
    assert back["note"] == "key " + "*" * len(CANARY) and back["n"] == 65
    assert isinstance(back["messages"][0], HumanMessage) and leaks(CANARY, back["messages"][0].content) == []
    assert serde.with_msgpack_allowlist([("x", "Y")]).redactor is r    # LangGraph's allowlist copy keeps it

    class State(TypedDict):
        note: str

    g = StateGraph(State)
    g.add_node("leak", lambda state: {"note": f"the key is {CANARY}, hex {CANARY.encode().hex()}"})
    g.add_edge(START, "leak")
    g.add_edge("leak", END)
    db = tmp_path / "checkpoints.sqlite"
    conn = sqlite3.connect(db, check_same_thread=False)
    graph = g.compile(checkpointer=redacting_saver(conn, r))
    cfg = {"configurable": {"thread_id": "t"}}
    assert CANARY in graph.invoke({"note": ""}, cfg)["note"]      # the run itself sees the value
    assert graph.get_state(cfg).values["note"].startswith("the key is ***")
    conn.close()
    raw = db.read_bytes()
    assert b"the key is *" in raw and CANARY.encode() not in raw and CANARY.encode().hex().encode() not in raw


# -----------------------------------------------------------------------------
# What the model reads


def test_clip_for_model_keeps_head_and_tail_of_a_huge_line_quickly():
    text = "h" * 1000 + "x" * 30_000_000 + "t" * 1000
    started = time.perf_counter()
    out = clip_for_model(text)
    assert time.perf_counter() - started < 1.0
    assert len(out) <= MODEL_OUTPUT_CHARS and out.startswith("h" * 1000) and out.endswith("t" * 1000)
    cut = int(re.search(r"\[\.\.\. (\d+) characters cut \.\.\.\]", out).group(1))
    assert len(out) - len(re.search(r"\n\[.*\]\n", out).group()) + cut == len(text)
    assert clip_for_model("short") == "short"


def test_clip_for_model_with_a_redactor_masks_secrets_cut_by_the_clip():
    r = Redactor([CANARY])
    started = time.perf_counter()
    body = "x" * 30_000_000
    for at in range(9_940, 9_990, 3):      # around where the head ends
        text = "q" * at + CANARY + body
        out = clip_for_model(text, redactor=r)
        assert len(out) <= MODEL_OUTPUT_CHARS and leaks(CANARY, out) == [] and "canary" not in out, at
    for at in range(9_950, 10_000, 3):     # around where the tail starts, counted from the end
        text = body + CANARY + "q" * at
        out = clip_for_model(text, redactor=r)
        assert leaks(CANARY, out) == [] and "b21" not in out, at
    assert time.perf_counter() - started < 3.0                    # 34 clips of a 30 MB text
    code = "flops_per_token = model.flops_per_token()"
    assert clip_for_model(code, redactor=r) == code


def test_the_tools_redact_and_clip_what_the_model_reads(tmp_path):
    ws = make_workspace(tmp_path, train_py=SAMPLE_TRAIN + "\nflops_per_token = 6 * 1000\n")
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    b64 = base64.b64encode(b"Authorization: " + CANARY.encode()).decode()
    (logs / "run-1.log").write_text(f"step 1\nenv dump: {CANARY}\nencoded: {b64}\nreversed {CANARY[::-1]}\n")
    (logs / "big.log").write_text(("y" * 399 + "\n") * 300)
    tools = {t.name: t for t in make_tools(ws, logs_dir=logs, redactor=Redactor([CANARY]))}
    out = tools["read_file"].invoke({"path": "logs/run-1.log"})
    assert "env dump: ***" in out and "reversed ***" in out and leaks(CANARY, out) == []
    assert "flops_per_token = 6 * 1000" in tools["read_file"].invoke({"path": "train.py"})
    big = tools["read_file"].invoke({"path": "logs/big.log"})    # 250 lines of 400: 100 KB
    assert len(big) <= MODEL_OUTPUT_CHARS and "characters cut" in big and "(lines 1-250 of 300)" in big
    error = tools["read_file"].invoke({"path": f"logs/{CANARY}.log"})
    assert "does not exist" in error and leaks(CANARY, error) == []
    # without a redactor the answers are still clipped, and that is all
    plain = {t.name: t for t in make_tools(ws, logs_dir=logs)}
    assert CANARY in plain["read_file"].invoke({"path": "logs/run-1.log"})
    assert len(plain["read_file"].invoke({"path": "logs/big.log"})) <= MODEL_OUTPUT_CHARS


class Recording(BaseChatModel):
    """Answers "ok", recording every message list it was sent."""
    sent: list = []

    @property
    def _llm_type(self) -> str:
        return "recording"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.sent.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage("ok"))])


def test_invoke_with_retry_sends_the_model_a_redacted_copy():
    from graph.llm import invoke_with_retry
    b64 = base64.urlsafe_b64encode(b"key=" + CANARY.encode()).decode()
    call = {"name": "read_file", "args": {"path": f"logs/{CANARY}.log", "n": 3}, "id": "call-1", "type": "tool_call"}
    messages = [SystemMessage(f"system {CANARY}"),
                HumanMessage([{"type": "text", "text": f"parts {b64}"}, f"plain {CANARY.encode().hex()}"]),
                AIMessage("", tool_calls=[call]),
                ToolMessage(f"tool said {CANARY[::-1]}", tool_call_id="call-1", name="read_file"),
                HumanMessage("flops_per_token = model.flops_per_token()")]
    before = [m.model_copy(deep=True) for m in messages]
    model = Recording(sent=[])
    reply = invoke_with_retry(model, messages, max_attempts=1, redactor=Redactor([CANARY]))
    assert reply.content == "ok"
    sent = model.sent[0]
    assert [type(m) for m in sent] == [type(m) for m in messages]
    assert leaks(CANARY, json.dumps([m.model_dump() for m in sent], default=str)) == []
    assert sent[0].content == "system ***" and sent[3].content == "tool said ***"
    parts = sent[1].content      # mid-text base64: the characters made of the secret's bits alone
    assert parts[0]["type"] == "text" and re.fullmatch(r"parts a2V5PW\*\*\*Q==", parts[0]["text"])
    assert parts[1] == "plain ***"
    assert sent[2].tool_calls[0]["args"] == {"path": "logs/***.log", "n": 3} and sent[2].tool_calls[0]["id"] == "call-1"
    assert sent[3].tool_call_id == "call-1" and sent[4].content == "flops_per_token = model.flops_per_token()"
    assert messages == before                      # the caller's messages are left as they were
    # without a redactor, the messages go as they are (the graph always passes the campaign's)
    model = Recording(sent=[])
    invoke_with_retry(model, messages, max_attempts=1)
    assert model.sent[0][0].content == f"system {CANARY}"


def test_the_campaign_holds_one_redactor_and_its_agent_never_sends_a_secret(tmp_path, monkeypatch):
    import dataclasses

    from graph.configuration import Credentials, Settings
    from graph.agent import run_agent
    from graph.campaign import Campaign
    from graph.llm import offline_models
    from graph.tracing import start_tracing

    monkeypatch.setenv("SOME_SERVICE_TOKEN", "service-token-value-123")
    settings = Settings(offline=True, runs_dir=tmp_path / "runs").with_credentials(Credentials(openai_api_key=CANARY))
    ws = make_workspace(tmp_path)
    logs = tmp_path / "runs" / "t" / "logs"
    logs.mkdir(parents=True)
    (logs / "run-1.log").write_text(f"the key {CANARY} and service-token-value-123\n")
    script = [AIMessage("", tool_calls=[{"name": "read_file", "args": {"path": "logs/run-1.log"}, "id": "c1",
                                         "type": "tool_call"}]),
              AIMessage("done")]

    class Agent(Recording):
        def bind_tools(self, tools, **kwargs):
            return self

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            self.sent.append(list(messages))
            return ChatResult(generations=[ChatGeneration(message=script.pop(0))])

    agent = Agent(sent=[])
    c = Campaign(settings=settings, run_dir=logs.parent, models=dataclasses.replace(offline_models(), agent=agent),
                 workspace=ws)
    assert set(c.redactor.secrets) >= {CANARY, "service-token-value-123"}
    state = {"best_val_bpb": 1.0, "baseline_val_bpb": 1.0, "stall": 0}
    run_agent(c, state, 1, f"a directive quoting {CANARY}")
    sent = json.dumps([m.model_dump() for batch in agent.sent for m in batch], default=str)
    assert "the key ***" in sent and leaks(CANARY, sent) == [] and "service-token-value-123" not in sent
    assert start_tracing(c).redactor is c.redactor


# -----------------------------------------------------------------------------
# The process


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_make_undumpable_clears_the_dumpable_flag_of_the_process():
    code = ("from tools.redact import is_dumpable, make_undumpable\n"
            "print(is_dumpable(), make_undumpable(), is_dumpable())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert out.stdout.split() == ["True", "True", "False"]   # dumpable before, not after
