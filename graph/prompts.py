"""Prompts are data: one Markdown template per file, rendered fresh on every call.

Templates live in the `prompts` package; a file of the same name in `--prompts-dir` overrides
the packaged one. Placeholders are str.format style (`{name}`, `{{` for a literal brace).
Because the file is read on each call, editing a prompt during a campaign takes effect at the
next iteration, without a restart.

Policy on names: every placeholder a template uses must be given a value, else `PromptError`
(this catches typos such as `{bestt_bpb}` at the first render). Values a template does not use
are fine, so an overriding prompt may drop any placeholder it does not want.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import prompts as _prompts_package

# -----------------------------------------------------------------------------
# constants

PACKAGED_DIR = Path(_prompts_package.__file__).resolve().parent
SUFFIX = ".md"

# The prompts the graph uses, by name (the file is the name + SUFFIX), and the placeholders each
# packaged template expects.
AGENT_SYSTEM = "agent_system"
AGENT_TASK = "agent_task"
AGENT_DIRECTIVE = "agent_directive"
AGENT_OTHERS = "agent_others"
DIRECTOR_SUMMARIZE = "director_summarize"
DIRECTOR_DIRECTIVE = "director_directive"
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    AGENT_SYSTEM: (),
    AGENT_TASK: (
        "iteration", "best_val_bpb", "best_runs", "baseline_val_bpb", "noise", "history",
        "directive_section", "stall", "max_agent_steps", "others",
    ),
    AGENT_DIRECTIVE: ("directive",),
    AGENT_OTHERS: ("claims",),
    DIRECTOR_SUMMARIZE: ("train_py",),
    DIRECTOR_DIRECTIVE: ("summary", "history", "stall", "paper"),
}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PromptError(Exception):
    """A prompt file is missing or its template does not fit the values given."""


# -----------------------------------------------------------------------------
# public API


def prompt_path(name: str, prompts_dir: str | Path | None = None) -> Path:
    """The file a prompt is read from: `prompts_dir/name` if it exists, else the packaged one."""
    filename = _filename(name)
    searched = _search_dirs(prompts_dir)
    for folder in searched:
        path = folder / filename
        if path.is_file():
            return path
    where = ", ".join(str(d) for d in searched)
    raise PromptError(f"prompt {filename} not found; searched: {where}")


def render_prompt(name: str, values: Mapping[str, Any], prompts_dir: str | Path | None = None) -> str:
    """Read the template `name` now (hot reload) and fill its `{placeholders}` from `values`."""
    path = prompt_path(name, prompts_dir)
    filename = path.name
    template = path.read_text(encoding="utf-8")
    for field in template_fields(template, filename):
        if field not in values:
            known = ", ".join(sorted(values)) or "(no values given)"
            raise PromptError(
                f"prompt {filename} ({path}) uses placeholder {{{field}}}, which is not one of: {known}"
                " (write {{ and }} for literal braces)"
            )
    try:
        return template.format_map(dict(values))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise PromptError(f"prompt {filename} ({path}) could not be rendered: {e}") from e


def template_fields(template: str, filename: str = "<template>") -> list[str]:
    """The placeholder names a template uses, in order of first use."""
    fields: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:  # a lone "{" or "}"
        raise PromptError(f"prompt {filename} is not a valid template: {e} (write {{{{ and }}}} for literal braces)") from e
    for _literal, field, _spec, _conversion in parsed:
        if field is None:
            continue
        if not _NAME.match(field):
            raise PromptError(
                f"prompt {filename} uses placeholder {{{field}}}; placeholders must be plain names"
                " like {history} (write {{ and }} for literal braces)"
            )
        if field not in fields:
            fields.append(field)
    return fields


def directive_section(directive: str | None, prompts_dir: str | Path | None = None) -> str:
    """The `{directive_section}` of agent_task.md: the pending directive under its heading, or ''."""
    if not directive or not directive.strip():
        return ""
    # Continue the Markdown quote the template opens ("> {directive}") over every line.
    quoted = directive.strip().replace("\n", "\n> ")
    return render_prompt(AGENT_DIRECTIVE, {"directive": quoted}, prompts_dir)


# -----------------------------------------------------------------------------
# helpers


def _filename(name: str) -> str:
    name = Path(name).name  # a prompt name, never a path outside the prompt folders
    return name if name.endswith(SUFFIX) else name + SUFFIX


def _search_dirs(prompts_dir: str | Path | None) -> list[Path]:
    dirs = [Path(prompts_dir).expanduser()] if prompts_dir else []
    return dirs + [PACKAGED_DIR]


def message_text(content: Any) -> str:
    """A chat message's text, whether the provider sent a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p if isinstance(p, str) else str(p.get("text", "")) if isinstance(p, dict) else str(p)
                         for p in content)
    return str(content)
