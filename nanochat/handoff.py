"""
The trained model's way from a training run to the scorer, as data rather than code.

A training run's model is whatever train.py built, and train.py is hostile code: the scorer must
never run it. So H.finish exports the model's forward with torch.export into a graph of ATen
operators, and writes it as a JSON list of operator calls plus a file of tensors. The scorer
rebuilds a function from them that can call only the operators listed in ALLOWED_OPS: pure tensor
maths, no operator that reads a file, allocates uninitialised memory, draws random numbers or
changes a tensor in place. No Python object from the training run is ever unpickled (the weights
load with torch.load(weights_only=True)), so a forged handoff can at worst compute wrong logits,
which the scorer then measures.

    export_model(model, example_tokens, out_dir)    # in the training run (H.finish)
    forward = load_forward(out_dir, device)          # in the scorer: tokens (B, T) -> logits (B, T, V)
"""

from __future__ import annotations

import json
import math
import operator
from pathlib import Path
from typing import Callable

import torch

from nanochat.config import HANDOFF_GRAPH, HANDOFF_WEIGHTS

FORMAT = 1
MAX_GRAPH_BYTES = 64 * 2**20      # a forward of a few thousand nodes is a few MB of JSON

# The operators a handed-over forward may call: what transformer forwards are made of. It is an
# allowlist on purpose: aten also has operators that read files (from_file), hand out uninitialised
# memory (empty, which could hold the scorer's earlier tensors) or are random (a random forward
# would make the causality probe meaningless). A model that needs another operator gets a clear
# error naming it; add it here only if it is pure tensor maths.
ALLOWED_OPS = frozenset("""
    _assert_tensor_metadata _log_softmax _softmax _to_copy _unsafe_view abs acos acosh add addcdiv addcmul
    addmm alias all amax amin any arange argmax argmin as_strided asin asinh atan atan2 atanh baddbmm bitwise_and
    bitwise_not bitwise_or bitwise_xor bmm broadcast_to cat ceil chunk clamp clamp_max clamp_min clip clone
    contiguous cos cosh cumprod cumsum detach diag diagonal div dot einsum elu embedding eq erf erfc exp exp2 expand
    expand_as expm1 flatten flip floor floor_divide fmod full full_like gather ge gelu glu group_norm gt
    hardsigmoid hardswish hardtanh index index_select isfinite isinf isnan layer_norm le leaky_relu lerp
    lift_fresh_copy linear linspace log log10 log1p log2 log_softmax logaddexp logical_and logical_not logical_or
    logical_xor logsumexp lt masked_fill matmul max maximum mean min minimum mish mm mul nan_to_num native_layer_norm
    ne neg new_full new_ones new_zeros norm ones ones_like outer pad permute pow prod reciprocal relu remainder
    repeat repeat_interleave reshape rms_norm roll rsqrt scalar_tensor scaled_dot_product_attention select
    select_scatter selu sigmoid sign silu sin sinh slice slice_scatter softmax softplus split split_with_sizes
    sqrt square squeeze stack std sub sum sym_size t tan tanh tensor_split tile to topk transpose tril triu
    true_divide trunc type_as unbind unflatten unsqueeze var view view_as where xlogy zeros zeros_like
""".split())
# torch.export may lower attention to one of its fused kernels; those are deterministic forward math too
ALLOWED_OPS |= {"_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu"}

_SIMPLE = (bool, int, str, type(None))


class HandoffError(RuntimeError):
    """The model cannot be handed to the scorer, or a handoff is malformed: the message says why."""


# -----------------------------------------------------------------------------
# Writing (inside the training run)

def export_model(model: torch.nn.Module, example: torch.Tensor, out_dir: Path) -> dict:
    """Export `model`'s forward on token batches shaped like `example` and write the handoff.
    torch.compile'd parts run eagerly while exporting, so the graph is the model's plain maths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if example.is_cuda else torch.autocast("cpu", enabled=False)
    try:
        with torch.no_grad(), autocast, torch.compiler.set_stance("force_eager"):
            ep = torch.export.export(model, (example,), strict=False)
    except Exception as e:
        raise HandoffError(f"torch.export could not trace the model's forward(tokens) -> logits: "
                           f"{type(e).__name__}: {str(e)[:600]}") from None
    graph, weights = _encode(ep)
    torch.save(weights, out_dir / HANDOFF_WEIGHTS)
    (out_dir / HANDOFF_GRAPH).write_text(json.dumps(graph))
    return {"nodes": len(graph["nodes"]), "tensors": len(weights)}


def _encode(ep) -> tuple[dict, dict[str, torch.Tensor]]:
    from torch.export.graph_signature import InputKind, OutputKind
    sig = ep.graph_signature
    bad_outputs = [s.kind.name for s in sig.output_specs if s.kind != OutputKind.USER_OUTPUT]
    if bad_outputs:
        raise HandoffError(f"the forward changes the model's state ({', '.join(bad_outputs)}): "
                           "scoring needs a pure function of the tokens")
    tensors = {**ep.state_dict, **ep.constants}
    index: dict[str, int] = {}
    nodes, placeholders, weights, output = [], [], {}, None
    specs = {s.arg.name: s for s in sig.input_specs}
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            spec = specs[node.name]
            if spec.kind == InputKind.USER_INPUT:
                placeholders.append({"input": True})
            elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                key = f"t{len(weights)}"
                weights[key] = tensors[spec.target].detach().contiguous()
                placeholders.append({"weight": key})
            else:
                raise HandoffError(f"the forward takes a {spec.kind.name} input, which cannot be handed over")
            index[node.name] = len(index)
        elif node.op == "call_function":
            nodes.append({"op": _op_name(node.target), "args": _enc(node.args, index),
                          "kwargs": {k: _enc(v, index) for k, v in node.kwargs.items()}})
            index[node.name] = len(index)
        elif node.op == "output":
            outs = node.args[0]
            if not isinstance(outs, (tuple, list)) or len(outs) != 1:
                raise HandoffError("forward(tokens) must return one tensor, the logits")
            output = _enc(outs[0], index)
        else:
            raise HandoffError(f"the exported graph has a '{node.op}' node ({node.target}); "
                               "only plain operator calls can be handed over")
    if sum("input" in p for p in placeholders) != 1:
        raise HandoffError("forward must take exactly one input, the token ids")
    return {"format": FORMAT, "placeholders": placeholders, "nodes": nodes, "output": output}, weights


def _op_name(target) -> str:
    if target is operator.getitem:
        return "getitem"
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._schema.name.split('::')[-1]}.{target._overloadname}"
    raise HandoffError(f"the forward calls {getattr(target, '__name__', target)!r}, which is not an ATen "
                       "operator (a custom op or a higher-order function); the scorer runs ATen operators only")


def _enc(value, index):
    if isinstance(value, torch.fx.Node):
        return {"node": index[value.name]}
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, _SIMPLE):
        return value
    if isinstance(value, (list, tuple)):
        return [_enc(v, index) for v in value]
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    raise HandoffError(f"the forward passes a {type(value).__name__} to an operator, which cannot be handed over")


# -----------------------------------------------------------------------------
# Reading (in the scorer): nothing here executes code from the handoff

def load_forward(handoff: Path, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The handed-over forward as a function of a token batch. Raises HandoffError if the handoff
    is malformed or calls an operator outside ALLOWED_OPS."""
    handoff = Path(handoff)
    graph_file, weights_file = handoff / HANDOFF_GRAPH, handoff / HANDOFF_WEIGHTS
    if not graph_file.is_file() or not weights_file.is_file():
        raise HandoffError("the run left no model for the scorer: train.py must end with H.finish(model, ...)")
    if graph_file.stat().st_size > MAX_GRAPH_BYTES:
        raise HandoffError(f"the model's graph is over {MAX_GRAPH_BYTES >> 20} MB")
    try:
        graph = json.loads(graph_file.read_text())
        weights = torch.load(weights_file, map_location=device, weights_only=True)
    except Exception as e:
        raise HandoffError(f"the handoff cannot be read: {type(e).__name__}: {str(e)[:300]}") from None
    if not isinstance(graph, dict) or graph.get("format") != FORMAT or not isinstance(weights, dict):
        raise HandoffError("the handoff is not in the harness's format")
    try:
        program = _Program(graph, weights, device)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise HandoffError(f"the handoff's graph is malformed ({type(e).__name__}: {e})") from None
    return program


class _Program:
    """A straight-line program over allowed ATen operators, interpreted node by node. Each value is
    dropped after its last use, so memory stays what the model itself needs."""

    def __init__(self, graph: dict, weights: dict, device: str):
        self.device = device
        slots: list = []
        self.input_slot = None
        for i, p in enumerate(graph["placeholders"]):
            if p.get("input") is True and self.input_slot is None:
                self.input_slot = i
                slots.append(None)
            else:
                t = weights[p["weight"]]
                if not isinstance(t, torch.Tensor):
                    raise TypeError("a weight is not a tensor")
                slots.append(t)
        if self.input_slot is None:
            raise ValueError("no token input")
        self.constants = slots
        self.calls = []
        n = len(slots)
        for node in graph["nodes"]:
            args = self._dec(node["args"], n)
            kwargs = {str(k): self._dec(v, n) for k, v in dict(node["kwargs"]).items()}
            self.calls.append((_resolve(node["op"]), args, kwargs))
            n += 1
        self.output = self._dec(graph["output"], n)
        if not isinstance(self.output, _Ref):
            raise ValueError("the output is not a computed tensor")
        # last use of each slot, so it can be freed right after
        self.last_use = {}
        for i, (_, args, kwargs) in enumerate(self.calls):
            for ref in _refs((args, kwargs)):
                self.last_use[ref.i] = len(slots) + i
        self.n_slots = n

    @staticmethod
    def _dec(value, n):
        if isinstance(value, dict):
            if set(value) == {"node"}:
                i = value["node"]
                if not isinstance(i, int) or not 0 <= i < n:
                    raise ValueError("a node refers to a value computed after it")
                return _Ref(i)
            (kind, name), = value.items()
            if kind == "float":
                return float(name)           # inf, -inf, nan
            if kind in ("dtype", "layout", "memory_format"):
                obj = getattr(torch, name)
                expected = {"dtype": torch.dtype, "layout": torch.layout, "memory_format": torch.memory_format}[kind]
                if not isinstance(obj, expected):
                    raise ValueError(f"{name} is not a torch {kind}")
                return obj
            if kind == "device":
                return torch.device(name)
            raise ValueError(f"unknown value kind {kind}")
        if isinstance(value, list):
            return [_Program._dec(v, n) for v in value]
        if isinstance(value, (bool, int, float, str, type(None))):
            return value
        raise ValueError(f"unexpected value {type(value).__name__}")

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        env = list(self.constants) + [None] * (self.n_slots - len(self.constants))
        env[self.input_slot] = tokens
        base = len(self.constants)
        for i, (fn, args, kwargs) in enumerate(self.calls):
            env[base + i] = fn(*_fill(args, env), **_fill(kwargs, env))
            for ref in _refs((args, kwargs)):
                if self.last_use.get(ref.i) == base + i and ref.i >= base and ref.i != self.output.i:
                    env[ref.i] = None
        out = env[self.output.i]
        if not isinstance(out, torch.Tensor):
            raise HandoffError("the forward's output is not a tensor")
        return out


class _Ref:
    __slots__ = ("i",)

    def __init__(self, i: int):
        self.i = i


def _refs(value):
    if isinstance(value, _Ref):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _refs(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _refs(v)


def _fill(value, env):
    if isinstance(value, _Ref):
        return env[value.i]
    if isinstance(value, list):
        return [_fill(v, env) for v in value]
    if isinstance(value, tuple):
        return tuple(_fill(v, env) for v in value)
    if isinstance(value, dict):
        return {k: _fill(v, env) for k, v in value.items()}
    return value


def _resolve(name: str):
    if name == "getitem":
        return operator.getitem
    parts = name.split(".") if isinstance(name, str) else []
    if len(parts) != 3 or parts[0] != "aten" or parts[1] not in ALLOWED_OPS:
        raise HandoffError(f"the model calls {name!r}, which the scorer does not run (it runs a fixed list of "
                           "pure ATen operators: nanochat/handoff.py ALLOWED_OPS); write the forward with "
                           "standard tensor operations")
    packet = getattr(torch.ops.aten, parts[1], None)
    op = getattr(packet, parts[2], None) if isinstance(packet, torch._ops.OpOverloadPacket) else None
    if not isinstance(op, torch._ops.OpOverload):
        raise HandoffError(f"{name!r} is not an operator of this torch")
    if op._schema.is_mutable:
        raise HandoffError(f"{name!r} changes a tensor in place; the scored forward must be pure")
    return op
