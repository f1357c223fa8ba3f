"""
LLM token usage: what one call reported, an experiment's sum, the campaign's totals and their cost.

A LangChain AIMessage carries `usage_metadata` (input_tokens, output_tokens, total_tokens) when the
provider reports it; the offline models estimate it (graph/offline/models.py: rough_usage). A call
that reports nothing counts 0 tokens, and so does a failed attempt that `invoke_with_retry`
retried (it returned no message). An experiment's usage is a plain dict {"input_tokens": n,
"output_tokens": n}, so it checkpoints as it is; results.tsv's verdict rows carry it (the
agent_* and director_* token columns, docs/INTERFACES.md) and the campaign's totals are summed
from there, so they survive --resume.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

IN, OUT = "input_tokens", "output_tokens"
MTOK = 1_000_000
PRICE_ENV = ("AUTORESEARCH_LLM_PRICE_IN_PER_MTOK", "AUTORESEARCH_LLM_PRICE_OUT_PER_MTOK")   # as Settings reads them


def of_message(message) -> dict:
    """The usage one model reply reported ({} counts as 0 tokens each way)."""
    usage = getattr(message, "usage_metadata", None) or {}
    return {IN: int(usage.get(IN) or 0), OUT: int(usage.get(OUT) or 0)}


def add(*usages: Mapping | None) -> dict:
    """The sum of usages (None or {} adds nothing)."""
    return {key: sum(int((u or {}).get(key) or 0) for u in usages) for key in (IN, OUT)}


def reported(message) -> bool:
    return bool(getattr(message, "usage_metadata", None))


def cost(input_tokens: int, output_tokens: int, price_in: float | None, price_out: float | None) -> float | None:
    """Dollars at these prices per million tokens; None when neither price is set (a price not set
    counts 0)."""
    if price_in is None and price_out is None:
        return None
    return (input_tokens * (price_in or 0.0) + output_tokens * (price_out or 0.0)) / MTOK


@dataclass(frozen=True)
class Totals:
    """The campaign's token usage as results.tsv records it (verdict rows only carry tokens)."""
    agent_in: int = 0
    agent_out: int = 0
    director_in: int = 0
    director_out: int = 0

    @property
    def agent(self) -> int:
        return self.agent_in + self.agent_out

    @property
    def director(self) -> int:
        return self.director_in + self.director_out

    @property
    def input(self) -> int:
        return self.agent_in + self.director_in

    @property
    def output(self) -> int:
        return self.agent_out + self.director_out

    @property
    def total(self) -> int:
        return self.agent + self.director

    def cost(self, price_in: float | None, price_out: float | None) -> float | None:
        return cost(self.input, self.output, price_in, price_out)


def totals(rows: Iterable) -> Totals:
    """Sum the token columns of results rows (graph.results.Row); empty cells count 0."""
    t = [0, 0, 0, 0]
    for r in rows:
        for i, value in enumerate((r.agent_input_tokens, r.agent_output_tokens,
                                   r.director_input_tokens, r.director_output_tokens)):
            t[i] += value or 0
    return Totals(*t)


def short(tokens: int) -> str:
    """12345 -> '12.3k', 2500000 -> '2.50M'."""
    if tokens >= MTOK:
        return f"{tokens / MTOK:.2f}M"
    if tokens >= 1000:
        return f"{tokens / 1000:.1f}k"
    return str(tokens)


def figures(rows, after: int, prices) -> dict:
    """The report's token figures (graph/report.py defines them): `after` experiments after the
    baseline, `prices` dollars per million (input, output) tokens."""
    spent = totals(rows)
    cost = spent.cost(*prices)
    return {
        "agent_tokens": spent.agent,
        "director_tokens": spent.director,
        "llm_tokens": spent.total,
        "input_tokens": spent.input,
        "output_tokens": spent.output,
        "tokens_per_experiment": spent.total / after if after > 0 else None,
        "llm_cost": cost,
        "cost_per_experiment": cost / after if cost is not None and after > 0 else None,
    }


def price_from_env(name: str) -> float | None:
    """A price from the environment (graph.report's default), None when unset or not a number."""
    value = os.environ.get(name, "").strip()
    try:
        return float(value) if value else None
    except ValueError:
        return None
