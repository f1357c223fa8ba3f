"""The names of train.py's knobs, written in graph/offline/knobs.py and nanochat/config.py, are the
template's: a constant renamed in nanochat/train.py must not leave a knob the researcher never finds
or a profile override that no longer applies."""

import ast

import pytest

from graph.offline.constants import parse_constants
from graph.offline.knobs import GROUPS, KNOBS
from nanochat.config import PROFILES, TEMPLATE_PATH, render_train_py


def top_level_constants(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names.update(t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper())
    return names


TEMPLATE = TEMPLATE_PATH.read_text()


def test_every_knob_is_a_constant_of_the_template_that_the_researcher_can_read():
    assert set(KNOBS) <= top_level_constants(TEMPLATE)
    readable = parse_constants(TEMPLATE)
    assert [name for name in KNOBS if name not in readable] == []


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_override_is_a_constant_of_the_template(profile):
    overrides = PROFILES[profile].train_overrides
    assert set(overrides) <= top_level_constants(TEMPLATE)
    rendered = parse_constants(render_train_py(profile))
    assert {name: rendered[name].value for name in overrides} == overrides
    assert [name for name in KNOBS if name not in rendered] == []


def test_one_entry_per_knob_and_the_summary_groups_cover_the_table():
    assert [name for _, names in GROUPS for name in names] == list(KNOBS)
    assert all(k.rationale and k.keywords for k in KNOBS.values() if k.rule is not None)
