"""
A quick static look at train.py before it runs (and at every patch): a fast first answer to a model
that tries the obvious ways to fake the metric, so it learns at once instead of after a whole run.

It is not the boundary. The boundary is the sandbox (train.py sees no validation data, no secret,
no harness it could change) and the separate scorer (no code of train.py runs there); see
docs/SECURITY.md. So this stays short: it refuses code that imitates the harness's summary line or
that rebinds the harness's own objects, and says why that cannot work.
"""

import ast
from dataclasses import dataclass

FORBIDDEN_STRINGS = {
    "val_bpb:": "printing a 'val_bpb:' line imitates the harness's summary; the metric comes only from the "
                "harness's scorer, after the run",
}
HARNESS_MODULES = ("nanochat", "prepare")
HARNESS_REASON = ("the harness's objects are read-only to train.py: a separate scorer process measures the model "
                  "H.finish hands over, so patching the harness in train.py cannot change val_bpb")


@dataclass
class Violation:
    line: int
    what: str    # the offending code, briefly
    reason: str

    def __str__(self):
        return f"line {self.line}: {self.what} — {self.reason}"


def harness_names(tree) -> set[str]:
    """Names bound to the harness: its modules, what is imported from them, and what is assigned
    from those (H = load_harness()), iterated to a fixed point."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names
                         if a.name.split(".")[0] in HARNESS_MODULES)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in HARNESS_MODULES:
            names.update(a.asname or a.name for a in node.names)
    while True:
        before = len(names)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and _root(node.value) in names:
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        if len(names) == before:
            return names


def _root(node) -> str | None:
    """`H` for H.a.b, H.a[0], H(), type(H).x."""
    while True:
        if isinstance(node, ast.Call):
            node = node.args[0] if isinstance(node.func, ast.Name) and node.func.id == "type" and node.args else node.func
        elif isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        else:
            return node.id if isinstance(node, ast.Name) else None


def check_source(source: str, filename: str = "train.py") -> list[Violation]:
    """All violations in `source`, in line order. A syntax error is reported as one violation."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as err:
        return [Violation(err.lineno or 0, "syntax error", err.msg)]
    harness = harness_names(tree)
    out = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out += [Violation(line, f"string containing '{s}'", reason)
                    for s, reason in FORBIDDEN_STRINGS.items() if s in node.value]
        elif isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, (ast.Store, ast.Del)) \
                and _root(node) in harness:
            out.append(Violation(line, f"assignment to {ast.unparse(node)}", HARNESS_REASON))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr") \
                and node.args and _root(node.args[0]) in harness:
            out.append(Violation(line, f"{node.func.id}({ast.unparse(node.args[0])}, ...)", HARNESS_REASON))
    return sorted(out, key=lambda v: v.line)


def format_violations(violations: list[Violation]) -> str:
    return "\n".join(f"- {v}" for v in violations)
