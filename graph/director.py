"""
The director: when the campaign stalls, one concrete idea from outside the loop.

    summarize -> paper -> directive          (a subgraph: its nodes show in the campaign graph)

- summarize: the director model summarises the best train.py (architecture, optimizer, key
  constants). Cached per version of the code: under a steady stall the code does not change.
- paper: a random ML paper, prefetched in the background while training runs (graph/papers.py);
  this node never waits on the network and may come back with no paper at all.
- directive: the reasoning model reads the summary, the experiment history and the paper, and
  writes ONE specific change in tentative language ("I think you could try ..."), without naming
  the paper. The agent gets it as a suggestion it may follow, adapt or reject.

When it fires is `director_due` below, the one statement of the rule. A failed LLM call falls
back to the offline director for that step: the director is advice, never a reason to stop.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from typing import Callable

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import START, StateGraph

from graph import results, usage
from graph.configuration import Settings
from graph.llm import LLMUnavailable, Models, describe_error, invoke_with_retry
from graph.offline import OfflineDirector
from graph.papers import PaperCache, PaperSource, arxiv_search, default_cache_dir, fetch_random_paper
from graph.tracing import annotate
from graph.prompts import DIRECTOR_DIRECTIVE, DIRECTOR_SUMMARIZE, message_text, render_prompt
from graph.state import CampaignState
from tools.redact import Redactor
from tools.workspace import Workspace, git

# -----------------------------------------------------------------------------
# constants

SUMMARY_CHARS = 4000       # the summary goes into every directive prompt: keep it compact
DIRECTIVE_CHARS = 1200     # the prompt asks for three sentences; this only stops a runaway answer
SHORT_CHARS = 120          # results.tsv's directive column: the first sentence, at most this long
NO_PAPER = "(nothing this time: reason from the code and the history alone)"
THINKING = re.compile(r"<think>.*?</think>", re.S | re.I)   # some servers inline a reasoner's thoughts
SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z(\"'`]|\s*$)")      # "0.04" and "e.g. x" are not ends


def director_due(state: CampaignState, patience: int) -> bool:
    """The director fires when `plateau`, the experiments without a keep counted from the last keep
    or the last firing, reaches --plateau-patience. A keep resets the count (the judge), and so does
    the directive (the directive node), so a steady stall meets the director every `patience`
    experiments, and never sooner than `patience` experiments after a keep."""
    return state.get("plateau", 0) >= patience


class Director:
    """Builds the director subgraph and owns its paper source. It reads the best train.py from the
    workspace and the history from results.tsv, asks the models, and reports through `on_event`.

    Creating it arms the first paper prefetch, so a paper is usually ready long before the first
    stall. `papers` and `rng` are injectable (tests, embedding)."""

    def __init__(self, settings: Settings, models: Models, workspace: Workspace, results_path: Path,
                 on_event: Callable[[str, dict], None], redactor: Redactor, *,
                 papers: PaperSource | None = None, rng: random.Random | None = None):
        self.settings, self.models, self.workspace = settings, models, workspace
        self.results_path, self.on_event, self.redactor = results_path, on_event, redactor
        self.rng = rng or random.Random()
        self.papers = papers or self.default_papers()
        self._summaries: dict[str, str] = {}    # sha256 of train.py -> its summary
        self.papers.start()

    def default_papers(self) -> PaperSource:
        s = self.settings
        cache = PaperCache(default_cache_dir(s.runs_dir))
        fetch = None     # offline, or no search terms: never touch the network, use the cache
        if not self.models.offline and s.arxiv_terms:
            terms, categories = list(s.arxiv_terms), list(s.arxiv_categories)
            fetch = lambda: fetch_random_paper(terms, categories, arxiv_search(), self.rng)  # noqa: E731
        return PaperSource(cache, fetch, rng=self.rng)

    def subgraph(self):
        g = StateGraph(CampaignState)
        g.add_node("summarize", self.summarize)
        g.add_node("paper", self.paper)
        g.add_node("directive", self.directive)
        g.add_edge(START, "summarize")
        g.add_edge("summarize", "paper")
        g.add_edge("paper", "directive")
        return g.compile()     # the parent's checkpointer covers it

    # -- the nodes

    def summarize(self, state: CampaignState, config: RunnableConfig) -> dict:
        self._annotate(state, config)
        self._phase(state, "director: reading train.py")
        source = self.best_train_py()
        key = hashlib.sha256(source.encode()).hexdigest()
        if key not in self._summaries:
            prompt = render_prompt(DIRECTOR_SUMMARIZE, {"train_py": source}, self.settings.prompts_dir)
            text, _, used = self.ask(self.models.director, prompt, "summarize", config)
            self._summaries[key] = results.clip(text, SUMMARY_CHARS)
            return {"code_summary": self._summaries[key],
                    "director_usage": usage.add(state.get("director_usage"), used)}
        return {"code_summary": self._summaries[key]}

    def paper(self, state: CampaignState, config: RunnableConfig) -> dict:
        paper, source = self.papers.take()     # immediate: what is ready, else the cache, else none
        self._annotate(state, config, paper=paper["title"] if paper else "", paper_source=source)
        self.on_event("paper", {"title": paper["title"] if paper else "", "source": source})
        return {"paper": paper}

    def directive(self, state: CampaignState, config: RunnableConfig) -> dict:
        self._annotate(state, config)
        self._phase(state, "director: writing a directive")
        paper = state.get("paper")
        values = {
            "summary": state.get("code_summary") or "(no summary)",
            "history": results.history_table(self.results_path),
            "stall": stall_text(state, self.results_path),
            "paper": paper_text(paper),
        }
        prompt = render_prompt(DIRECTOR_DIRECTIVE, values, self.settings.prompts_dir)
        text, fallback, used = self.ask(self.models.reasoner, prompt, "directive", config)
        directive = clean_directive(text, paper)
        short = short_form(directive)
        self.on_event("director", {"text": directive, "short": short, "fallback": fallback,
                                     "paper": paper["title"] if paper else ""})
        return {"directive": directive, "directive_short": short, "plateau": 0,
                "director_usage": usage.add(state.get("director_usage"), used)}

    # -- helpers

    def best_train_py(self) -> str:
        """train.py as of the best commit: what the next experiment starts from, whatever the
        working tree holds after a kill."""
        ws = self.workspace
        try:
            return git(ws.root, "show", f"{ws.best_commit()}:train.py") + "\n"
        except RuntimeError:
            return (ws.root / "train.py").read_text()

    def ask(self, model, prompt: str, step: str, config: RunnableConfig | None = None) -> tuple[str, str, dict]:
        """The model's answer, or the offline director's when the model fails: (text, why it fell
        back, the tokens the call used: graph/usage.py; the fallback uses none)."""
        s = self.settings
        messages = [HumanMessage(prompt)]
        used = usage.add()      # a call that answered nothing still cost its tokens

        def on_retry(attempt, wait, error):
            self.on_event("retry", {"attempt": attempt, "wait": wait, "error": error})

        try:
            reply = invoke_with_retry(model, messages, max_attempts=s.llm_max_attempts, on_retry=on_retry,
                                      secrets=s.credentials.secrets(), config=config, redactor=self.redactor)
            used = usage.of_message(reply)
            if not usage.reported(reply):
                self.on_event("usage_missing", {"iteration": None, "who": "director"})
            text = THINKING.sub("", message_text(reply.content)).strip()
            if text:
                return text, "", used
            reason = "the model answered nothing"
        except LLMUnavailable as e:
            reason = str(e)
        except Exception as e:    # 400/401/404 propagate from invoke_with_retry: still only advice
            reason = describe_error(e, self.redactor.extended(s.credentials.secrets()))
        self.on_event("error", {"message": f"director ({step}): {reason}; using the offline director"})
        return OfflineDirector().respond(messages), reason, used

    def _annotate(self, state: CampaignState, config: RunnableConfig, **extra) -> None:
        annotate(config, campaign=self.settings.campaign, iteration=state.get("iteration", 0) + 1,
                 commit=(state.get("best_commit") or "")[:7], val_bpb=state.get("best_val_bpb"), **extra)

    def _phase(self, state: CampaignState, phase: str) -> None:
        self.on_event("phase", {"iteration": state.get("iteration", 0) + 1, "phase": phase})


# -----------------------------------------------------------------------------
# text helpers


def stall_text(state: CampaignState, results_path) -> str:
    """The campaign's situation in two sentences, for the directive prompt."""
    rows = [r for r in results.rows(results_path) if r.iteration and r.is_verdict]   # experiments after the baseline
    count = {status: sum(r.status == status for r in rows) for status in ("keep", "discard", "crash", "no-run")}
    best, baseline = state.get("best_val_bpb"), state.get("baseline_val_bpb")
    where = f" (best val_bpb {best:.6f}, baseline {baseline:.6f})" if best and baseline else ""
    return (f"The last {state.get('stall', 0)} experiment(s) in a row did not improve on the best{where}. "
            f"So far {len(rows)} experiments after the baseline: {count['keep']} kept, "
            f"{count['discard']} discarded, {count['crash']} crashed, {count['no-run']} without a run.")


def paper_text(paper: dict | None) -> str:
    if not paper:
        return NO_PAPER
    return f"{paper.get('title', '')}\n\n{paper.get('summary', '')}".strip()


def clean_directive(text: str, paper: dict | None) -> str:
    """The directive as the agent sees it: trimmed, unquoted, and never naming the paper."""
    text = text.strip().strip('"').strip()
    paper = paper or {}
    for name in (paper.get("title"), paper.get("id")):
        if name and len(name) > 3:
            text = re.sub(re.escape(name), "a recent idea", text, flags=re.I)
    return results.clip(text, DIRECTIVE_CHARS)


def short_form(directive: str, limit: int = SHORT_CHARS) -> str:
    """The first sentence on one line, at most `limit` characters (results.tsv's directive column)."""
    line = " ".join(directive.split())
    end = SENTENCE_END.search(line)
    first = line[: end.end()] if end else line
    if len(first) <= limit:
        return first
    # a long sentence: end at its last clause break that fits ("... to 0.06, from 0.04 now: why")
    cut = max(first.rfind(mark, 0, limit) for mark in (":", ";", " — ", " - "))
    if cut >= limit // 2:
        return first[:cut].rstrip()
    return results.clip(first, limit)
