"""The built-in offline researcher and director: chat models with no LLM behind them.

constants.py  reads and writes train.py's top-level constants
knobs.py      the constants the researcher knows how to move, and what it says of them
search.py     which experiment next, from train.py and the history (pure Python)
directive.py  a pending directive, read as one of the search's moves
patterns.py   every format of tool output and prompt text the offline models read
models.py     RuleBasedChat and OfflineResearcher (LangChain chat models)
director.py   OfflineDirector
"""

from graph.offline.constants import parse_constants
from graph.offline.director import DIRECTOR_LABEL, OfflineDirector
from graph.offline.models import NO_EXPERIMENT_LEFT, OFFLINE_LABEL, OfflineResearcher, RuleBasedChat
from graph.offline.search import parse_history

__all__ = ["DIRECTOR_LABEL", "NO_EXPERIMENT_LEFT", "OFFLINE_LABEL", "OfflineDirector", "OfflineResearcher",
           "RuleBasedChat", "parse_constants", "parse_history"]
