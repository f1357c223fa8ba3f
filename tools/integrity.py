"""
A static check of train.py, run before every training (and on every patch): refuse code that could
forge the metric or tamper with the harness's evaluation.

The metric reaches the supervisor on a channel train.py's prints cannot forge (the harness writes
JSON to $NANOCHAT_RESULT_FILE). This check closes the simple ways around that: printing a summary
line, writing the result file, patching the harness, or reaching into the interpreter to do so.
It is a guard against accidents and easy tricks, not a sandbox (see docs/SECURITY.md).
All rules live in the tables below, each with the reason given to the model.
"""

import ast
from dataclasses import dataclass

# -----------------------------------------------------------------------------
# The rules, in one place

# substrings no string literal may contain
FORBIDDEN_STRINGS = {
    "val_bpb:": "printing a 'val_bpb:' line imitates the harness's summary; only H.finish(...) reports the metric",
    "NANOCHAT_RESULT": "the result file belongs to the harness; train.py must not read or write it",
}

# modules train.py may not import (a dotted name counts with all its submodules)
FORBIDDEN_MODULES = {
    "ctypes": "raw memory access can rewrite the harness's code or data",
    "inspect": "introspection reaches the harness's frames and code objects",
    "importlib": "dynamic imports and module reloading can swap the harness for another module",
    "builtins": "replacing builtins (print, open, ...) changes how the harness itself behaves",
}

# modules allowed only for some attributes: gc.collect/freeze/disable are a common speed trick,
# while gc.get_objects/get_referrers find the harness's objects to patch them
RESTRICTED_MODULES = {
    "gc": ({"collect", "freeze", "unfreeze", "disable", "enable", "isenabled", "set_threshold", "get_threshold"},
           "gc's object lists (get_objects, get_referrers, ...) reach the harness's objects; only "
           "gc.collect/freeze/unfreeze/disable/enable/isenabled/set_threshold/get_threshold are allowed"),
}

# attribute accesses refused on any object, as (module or None, attribute)
FORBIDDEN_ATTRIBUTES = {
    ("sys", "modules"): "sys.modules lets code replace or patch the loaded harness module",
    ("os", "_exit"): "os._exit skips the harness's end of run; return normally or raise instead",
    (None, "__code__"): "swapping a function's code object rewrites it in place",
    (None, "__globals__"): "a function's globals reach into the module that defined it (the harness)",
    (None, "__builtins__"): "replacing builtins changes how the harness itself behaves",
    (None, "__subclasses__"): "walking the class tree reaches the harness's classes",
    ("sys", "_getframe"): "frame objects reach the harness's local variables",
    (None, "f_globals"): "frame objects reach the harness's variables",
    (None, "f_locals"): "frame objects reach the harness's variables",
    (None, "f_back"): "frame objects reach the harness's variables",
}
# the same attributes named as strings, as in getattr(f, "__code__")
FORBIDDEN_ATTRIBUTE_STRINGS = {attr: reason for (mod, attr), reason in FORBIDDEN_ATTRIBUTES.items() if mod is None}

# modules whose attributes are checked by name (sys.modules, os._exit, gc.get_objects): importing
# them under another name would hide those attributes from the check
NO_ALIAS_MODULES = {"sys", "os", "gc"}

# builtins that run code this check cannot see, or set attributes by name
FORBIDDEN_CALLS = {
    "exec": "code in strings cannot be checked; write it as plain Python",
    "eval": "code in strings cannot be checked; write it as plain Python",
    "compile": "code in strings cannot be checked; write it as plain Python (torch.compile is fine)",
    "__import__": "dynamic imports can swap the harness for another module; use a plain import",
}

# what belongs to the harness: its modules, the names imported from them, what load_harness() returns
HARNESS_MODULES = ("nanochat.prepare", "prepare", "nanochat")
PROTECTED_METHODS = {"evaluate_bpb", "finish", "fail", "load_harness"}  # never reassigned, on any object
HARNESS_REASON = "the harness (its module, the Harness object and its methods) is read-only to train.py"
# harness names train.py may not even read: the result channel, and everything private (_write_result, ...)
HARNESS_PRIVATE = {"RESULT_ENV"}
PRIVATE_REASON = "private parts of the harness (such as its result writer) are not train.py's to use"


@dataclass
class Violation:
    line: int
    what: str    # the offending code, briefly
    reason: str

    def __str__(self):
        return f"line {self.line}: {self.what} — {self.reason}"


# -----------------------------------------------------------------------------
# The check

def root_name(node) -> str | None:
    """`H` for H.a.b, H.a[0].b, H().a; None if the chain does not start at a plain name."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def harness_names(tree) -> set[str]:
    """Names bound to the harness: imported from it, or assigned a harness object
    (H = load_harness(), ev = H.evaluate_bpb). Iterated to a fixed point, in any source order."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in HARNESS_MODULES or a.name.startswith("nanochat."):
                    names.add((a.asname or a.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and (
                node.module in HARNESS_MODULES or node.module.startswith("nanochat.")):
            names.update(a.asname or a.name for a in node.names)
    while True:
        before = len(names)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and refers_to(node.value, names):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    names.update(bound_names(t))
        if len(names) == before:
            return names


def bound_names(target) -> list[str]:
    """The plain names an assignment target binds (x, (a, b), *rest), not x in x[0] = ... or x.y = ..."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for t in target.elts for n in bound_names(t)]
    if isinstance(target, ast.Starred):
        return bound_names(target.value)
    return []


def refers_to(node, names) -> bool:
    """Whether `node` is a harness object itself: H, H.evaluate_bpb, load_harness(), prepare.Harness.
    Not what harness methods return (a batch from H.train_loader(...) is the model's to use)."""
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id in names
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id in names


def check_module_name(name: str, line: int, out: list) -> None:
    top = name.split(".")[0]
    if top in FORBIDDEN_MODULES:
        out.append(Violation(line, f"import {name}", FORBIDDEN_MODULES[top]))


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
        # string literals (f-string parts included)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for s, reason in FORBIDDEN_STRINGS.items():
                if s in node.value:
                    out.append(Violation(line, f"string containing '{s}'", reason))
            if node.value in FORBIDDEN_ATTRIBUTE_STRINGS:
                out.append(Violation(line, f"string '{node.value}'", FORBIDDEN_ATTRIBUTE_STRINGS[node.value]))
        # imports
        elif isinstance(node, ast.Import):
            for a in node.names:
                check_module_name(a.name, line, out)
                if a.name in NO_ALIAS_MODULES and a.asname and a.asname != a.name:
                    out.append(Violation(line, f"import {a.name} as {a.asname}",
                                         f"import {a.name} under its own name so this check can see what it is used for"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            check_module_name(node.module, line, out)
            for a in node.names:
                if (node.module in HARNESS_MODULES or node.module.startswith("nanochat.")) and \
                        (a.name.startswith("_") or a.name in HARNESS_PRIVATE):
                    out.append(Violation(line, f"from {node.module} import {a.name}", PRIVATE_REASON))
                if (node.module, a.name) in FORBIDDEN_ATTRIBUTES:
                    out.append(Violation(line, f"from {node.module} import {a.name}", FORBIDDEN_ATTRIBUTES[(node.module, a.name)]))
                if node.module in RESTRICTED_MODULES and a.name not in RESTRICTED_MODULES[node.module][0]:
                    out.append(Violation(line, f"from {node.module} import {a.name}", RESTRICTED_MODULES[node.module][1]))
        # attribute reads and writes
        elif isinstance(node, ast.Attribute):
            base = node.value.id if isinstance(node.value, ast.Name) else None
            for (mod, attr), reason in FORBIDDEN_ATTRIBUTES.items():
                if node.attr == attr and (mod is None or mod == base):
                    out.append(Violation(line, f"{base + '.' if base else ''}{attr}", reason))
            if base in RESTRICTED_MODULES and node.attr not in RESTRICTED_MODULES[base][0]:
                out.append(Violation(line, f"{base}.{node.attr}", RESTRICTED_MODULES[base][1]))
            if root_name(node) in harness and (node.attr in HARNESS_PRIVATE or
                                               node.attr.startswith("_") and node.attr not in FORBIDDEN_ATTRIBUTE_STRINGS):
                out.append(Violation(line, ast.unparse(node), PRIVATE_REASON))
            if isinstance(node.ctx, (ast.Store, ast.Del)) and (root_name(node) in harness or node.attr in PROTECTED_METHODS):
                out.append(Violation(line, f"assignment to {ast.unparse(node)}", HARNESS_REASON))
        # item writes into harness objects (H.__dict__["finish"] = ..., vars(H)[...] = ...)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del)):
            target = node.value
            if isinstance(target, ast.Call) and isinstance(target.func, ast.Name) and target.func.id == "vars" and target.args:
                target = target.args[0]
            if root_name(target) in harness:
                out.append(Violation(line, f"assignment to {ast.unparse(node)}", HARNESS_REASON))
        # calls
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            fn = node.func.id
            if fn in FORBIDDEN_CALLS:
                out.append(Violation(line, f"{fn}(...)", FORBIDDEN_CALLS[fn]))
            elif fn in ("setattr", "delattr") and node.args:
                obj = node.args[0]
                attr = node.args[1] if len(node.args) > 1 else None
                if root_name(obj) in harness or (isinstance(attr, ast.Constant) and attr.value in PROTECTED_METHODS):
                    out.append(Violation(line, f"{fn}({ast.unparse(obj)}, ...)", HARNESS_REASON))
    return sorted(out, key=lambda v: v.line)


def format_violations(violations: list[Violation]) -> str:
    return "\n".join(f"- {v}" for v in violations)
