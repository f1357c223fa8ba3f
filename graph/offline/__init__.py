"""The built-in offline researcher and director: chat models with no LLM behind them.

constants.py  reads and writes train.py's top-level constants
knobs.py      the constants the researcher knows how to move, and what it says of them
search.py     which experiment next, from train.py and the history (pure Python)
directive.py  a pending directive, read as one of the search's moves
patterns.py   every format of tool output and prompt text the offline models read
models.py     RuleBasedChat and OfflineResearcher (LangChain chat models)
director.py   OfflineDirector
"""

from graph.offline.director import DIRECTOR_LABEL, OfflineDirector
from graph.offline.models import OFFLINE_LABEL, OfflineResearcher
from graph.offline.search import parse_history

__all__ = ["DIRECTOR_LABEL", "OFFLINE_LABEL", "OfflineDirector", "OfflineResearcher", "parse_history"]
