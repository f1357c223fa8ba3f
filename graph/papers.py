"""
Papers for the director: one random ML paper from arXiv, fetched in the background, cached on disk.

The director fires only after a stall, and it must never make an iteration wait for arXiv. So the
next paper is prefetched in a daemon thread while training runs, and `PaperSource.take()` only
takes what is ready:

    a prefetched paper  ->  else a random cached one  ->  else None ("no paper this time")

and then arms the next prefetch. A fetch that hangs is abandoned after FETCH_TIMEOUT seconds
(the arxiv client sets no timeout of its own). With no fetch function (offline campaigns, or an
empty list of search terms) the network is never touched: the cache is all there is.

A random paper: a random term of `--arxiv-terms`, a random category of `--arxiv-categories`, a
random offset among the most relevant results. On no result the category is dropped, then
another term is tried (`fetch_random_paper`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# -----------------------------------------------------------------------------
# constants

PAGE_SIZE = 1              # one request, one paper: exactly the one at the random offset
DELAY_SECONDS = 3.0        # arXiv's terms of use: no more than one request every three seconds
NUM_RETRIES = 1            # a failed fetch is retried at the director's next firing anyway
REQUEST_TIMEOUT = 20.0     # seconds per HTTP request, so an abandoned fetch thread ends eventually
FETCH_TIMEOUT = 60.0       # a whole fetch (up to MAX_QUERIES requests) taking longer is abandoned
MAX_OFFSET = 100           # papers are drawn from the top MAX_OFFSET results of a query
TERMS_PER_FETCH = 2        # on no result: drop the category, then try another term (2 terms x 2)
SUMMARY_CHARS = 3000       # an abstract is ~1500 characters; this bounds the director's prompt
CACHE_ENV = "AUTORESEARCH_CACHE"   # the harness's cache root (nanochat/prepare.py); papers go in papers/
CACHE_SUBDIR = "papers"
RUNS_CACHE_SUBDIR = ".papers"      # without $AUTORESEARCH_CACHE: <runs_dir>/.papers, shared by campaigns

Paper = dict               # id, title, summary, authors, categories, url, fetched_at
Search = Callable[["Query"], "Paper | None"]


# -----------------------------------------------------------------------------
# One query, and the random ladder of queries


@dataclass(frozen=True)
class Query:
    term: str
    category: str | None
    offset: int

    @property
    def text(self) -> str:
        """arXiv's query syntax: the term as a phrase in any field, optionally within a category."""
        phrase = f'all:"{self.term}"'
        return f"{phrase} AND cat:{self.category}" if self.category else phrase


def fetch_random_paper(terms: list[str], categories: list[str], search: Search,
                       rng: random.Random | None = None, max_offset: int = MAX_OFFSET) -> Paper | None:
    """A random paper, or None when every query came back empty. Errors propagate (the caller
    decides what a failed fetch means). The ladder, for up to TERMS_PER_FETCH random terms:
    term + random category at a random offset, then the same term in any category."""
    rng = rng or random.Random()
    if not terms:
        return None
    for term in rng.sample(terms, min(TERMS_PER_FETCH, len(terms))):
        offset = rng.randrange(max_offset) if max_offset > 0 else 0
        category = rng.choice(categories) if categories else None
        for cat in dict.fromkeys([category, None]):     # dropping the category widens the search
            paper = search(Query(term, cat, offset))
            if paper:
                return paper
    return None


def arxiv_search(client=None) -> Search:
    """The real search through the `arxiv` package: one request per query, one paper per request.
    One client per fetch, so its DELAY_SECONDS spacing holds between the ladder's queries."""
    import arxiv   # lazy: offline campaigns and most tests never need it

    if client is None:
        client = arxiv.Client(page_size=PAGE_SIZE, delay_seconds=DELAY_SECONDS, num_retries=NUM_RETRIES)
        _set_request_timeout(client, REQUEST_TIMEOUT)

    def search(query: Query) -> Paper | None:
        # max_results = offset + 1 with offset=k: the client yields exactly the k-th result, if any
        s = arxiv.Search(query=query.text, max_results=query.offset + 1,
                         sort_by=arxiv.SortCriterion.Relevance)
        result = next(iter(client.results(s, offset=query.offset)), None)
        return paper_from_result(result) if result is not None else None
    return search


def _set_request_timeout(client, seconds: float) -> None:
    """arxiv.Client calls requests without a timeout: give its session one, so a dead socket
    frees the (abandoned) fetch thread. A private detail of the client; skipped if it changes."""
    session = getattr(client, "_session", None)
    if session is not None and hasattr(session, "request"):
        session.request = functools.partial(session.request, timeout=seconds)


def paper_from_result(result) -> Paper:
    """An arxiv.Result as the plain dict we cache and put in the state."""
    short_id = result.get_short_id() if hasattr(result, "get_short_id") else str(result.entry_id).rsplit("/", 1)[-1]
    return {
        "id": short_id,
        "title": " ".join(str(result.title).split()),
        "summary": " ".join(str(result.summary).split())[:SUMMARY_CHARS],
        "authors": [str(a) for a in (result.authors or [])],
        "categories": list(result.categories or []),
        "url": str(result.entry_id),
        "fetched_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


# -----------------------------------------------------------------------------
# The disk cache


def default_cache_dir(runs_dir: Path) -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() / CACHE_SUBDIR if root else Path(runs_dir) / RUNS_CACHE_SUBDIR


class PaperCache:
    """One JSON file per paper. Safe across threads and processes: writes are atomic renames."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def save(self, paper: Paper) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", str(paper.get("id") or paper.get("title") or "paper"))[:100]
        path = self.folder / f"{name}.json"
        tmp = path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(paper, indent=1, ensure_ascii=False))
        tmp.replace(path)
        return path

    def papers(self) -> list[Paper]:
        if not self.folder.is_dir():
            return []
        out = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                paper = json.loads(path.read_text())
            except (OSError, ValueError):
                continue      # a damaged file is skipped, not fatal
            if isinstance(paper, dict) and paper.get("title"):
                out.append(paper)
        return out

    def random(self, rng: random.Random, avoid: str | None = None) -> Paper | None:
        """A random cached paper, not `avoid` (the last one read) when there is a choice."""
        papers = self.papers()
        fresh = [p for p in papers if p.get("id") != avoid] or papers
        return rng.choice(fresh) if fresh else None


# -----------------------------------------------------------------------------
# The background prefetcher


class PaperSource:
    """Hands out papers without ever waiting on the network.

    `start()` arms one background fetch; `take()` returns (paper or None, where it came from) at
    once and arms the next fetch unless one is still running. At most one fetch per director
    firing reaches arXiv, which is gentle on the API and bounds abandoned threads.
    """

    def __init__(self, cache: PaperCache, fetch: Callable[[], Paper | None] | None,
                 timeout: float = FETCH_TIMEOUT, rng: random.Random | None = None):
        self.cache = cache
        self.fetch = fetch               # None: offline, never touch the network
        self.timeout = timeout
        self.rng = rng or random.Random()
        self.last_error = ""             # why the last fetch gave nothing ("" if it gave a paper)
        self._lock = threading.Lock()
        self._ready: Paper | None = None
        self._thread: threading.Thread | None = None
        self._last_id: str | None = None
        self.last_seconds = 0.0           # how long the last fetch took (or was waited for)

    def start(self) -> None:
        self._arm()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def take(self) -> tuple[Paper | None, str]:
        """The paper for this director firing, immediately: (paper, source) or (None, reason)."""
        with self._lock:
            paper, self._ready = self._ready, None
            why = "offline: arXiv is not queried" if self.fetch is None else \
                "the next paper is still being fetched" if self.busy else \
                f"arXiv gave nothing ({self.last_error or 'not fetched yet'})"
        self._arm()               # for the next firing (a no-op while a fetch is running)
        if paper is None:
            paper = self.cache.random(self.rng, avoid=self._last_id)
            source = f"cache ({why})" if paper else f"no paper this time ({why})"
        else:
            source = "arxiv (prefetched)"
        self._last_id = paper.get("id") if paper else self._last_id
        return paper, source

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running prefetch to settle (for tests and orderly shutdowns). True if idle."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.busy

    # -- the threads

    def _arm(self) -> None:
        with self._lock:
            if self.fetch is None or self.busy or self._ready is not None:
                return
            self._thread = threading.Thread(target=self._prefetch, name="paper-prefetch", daemon=True)
            self._thread.start()

    def _prefetch(self) -> None:
        """Runs the fetch in a worker thread and waits for it at most `timeout` seconds: a fetch
        cannot be killed, but it can be abandoned (its thread is a daemon)."""
        box: dict = {}
        worker = threading.Thread(target=self._fetch_into, args=(box,), name="paper-fetch", daemon=True)
        started = time.monotonic()
        worker.start()
        worker.join(self.timeout)
        with self._lock:
            if worker.is_alive():
                self.last_error = f"timed out after {self.timeout:.0f} s"
            elif "error" in box:
                self.last_error = box["error"]
            elif not box.get("paper"):
                self.last_error = "no result for any query"
            else:
                self.last_error = ""
                self._ready = box["paper"]
            self.last_seconds = time.monotonic() - started

    def _fetch_into(self, box: dict) -> None:
        try:
            paper = self.fetch()
            if paper:
                self.cache.save(paper)     # even a late (abandoned) paper is worth keeping
            box["paper"] = paper
        except Exception as e:             # network, HTTP, parse errors: all mean "no paper now"
            box["error"] = f"{type(e).__name__}: {e}"[:200]
