"""Static scan of losses.py for built-ins the assignment forbids (TRUSTED side; never executes it).

Complements the worker's runtime guards: those catch calls that happen, this catches
references to private or lowered entry points (``torch.ops.aten._softmax``,
``torch._C._VariableFunctions.logsumexp``, ...) that a guard on the public names would miss.
Only code inside functions and classes is scanned for forbidden names: a module-level alias such
as ``ce = F.cross_entropy`` is bound to the guarded wrapper and caught when it is called.  Reaching
*past* the guards is reported wherever it appears (module-level findings count for every
function, under the key ``"*"``): ``__wrapped__``/``__closure__``/``cell_contents``, ``torch._C``,
``torch.ops``, torch's dispatch machinery and the ``gc``, ``ctypes`` and ``inspect`` modules, and
a string that is exactly a forbidden name (``getattr(F, "cross_entropy")``).

Example
-------
>>> source = '''
... import torch.nn.functional as F
... def softmax(x, dim=-1):
...     e = (x - x.amax(dim, keepdim=True)).exp()
...     return e / e.sum(dim, keepdim=True)
... def cross_entropy(logits, target):
...     return F.cross_entropy(logits, target)
... '''
>>> forbidden_uses(source)
{'cross_entropy': ['torch.nn.functional.cross_entropy (line 7)']}
"""
from __future__ import annotations

import ast
import re

FORBIDDEN_NAME = re.compile(
    r"_?(log_)?softmax(_backward_data)?|softmin|logsumexp|gumbel_softmax|(binary_)?cross_entropy(_loss)?"
    r"|binary_cross_entropy_with_logits|nll_loss(2d|_nd)?|(l1|mse|smooth_l1|huber|kl_div|poisson_nll|gaussian_nll)_loss"
    r"|kl_div|(BCE|BCEWithLogits|CrossEntropy|NLL|MSE|L1|KLDiv|Huber|SmoothL1|PoissonNLL|GaussianNLL)Loss"
    r"|(Log)?Softmax|Softmin|_VariableFunctions|_VF")
TORCH_ROOTS = ("torch",)
REACH_MODULES = ("gc", "ctypes", "inspect")  # honest loss code needs none of them
REACH_ATTRIBUTES = ("__wrapped__", "__closure__", "cell_contents", "__globals__", "_DisableTorchDispatch",
                    "_python_dispatch", "_pop_mode", "_pop_mode_temporarily", "_unset_dispatch_mode")
REACH_PREFIXES = ("torch._C", "torch.ops", "torch.utils._python_dispatch")


def _dotted(node: ast.AST, aliases: "dict[str, str]") -> "str | None":
    """``F.cross_entropy`` -> ``torch.nn.functional.cross_entropy`` when F is an alias of it."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    base = aliases.get(node.id)
    if base is None:
        return None
    return ".".join([base, *reversed(parts)])


def _aliases(tree: ast.AST) -> "dict[str, str]":
    """Names bound to torch modules or objects by imports anywhere in the file."""
    aliases: "dict[str, str]" = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in TORCH_ROOTS:
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else "torch"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in TORCH_ROOTS:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


class _Visitor(ast.NodeVisitor):
    def __init__(self, aliases: "dict[str, str]", reach_aliases: "dict[str, str] | None" = None) -> None:
        self.aliases, self.owner, self.found = aliases, None, {}
        self.reach_aliases = reach_aliases or {}

    def _scoped(self, node: ast.AST) -> None:
        outer = self.owner
        self.owner = outer or node.name  # methods count for their class (SoftmaxCrossEntropy)
        self.generic_visit(node)
        self.owner = outer

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def _flag(self, what: str, node: ast.AST, *, anywhere: bool = False) -> None:
        owner = self.owner if self.owner is not None else ("*" if anywhere else None)
        if owner is not None:
            entries = self.found.setdefault(owner, [])
            entry = f"{what} (line {node.lineno})"
            if entry not in entries:
                entries.append(entry)

    def _reach(self, node: ast.Attribute) -> None:
        """References that step around the grader's guards (reported at module level too)."""
        dotted = _dotted(node, self.aliases) or ""
        if node.attr in REACH_ATTRIBUTES:
            self._flag(f"{dotted or node.attr} (reaches past the grader's guards)", node, anywhere=True)
        elif any(dotted == p or dotted.startswith(p + ".") for p in REACH_PREFIXES) and \
                not any(dotted.rsplit(".", 1)[0] == p or dotted.rsplit(".", 1)[0].startswith(p + ".")
                        for p in REACH_PREFIXES):
            owner = self.owner if self.owner is not None else "*"
            if not any(e.startswith(dotted + ".") and e.endswith(f"(line {node.lineno})")
                       for e in self.found.get(owner, [])):  # already named, more precisely
                self._flag(f"{dotted} (torch internals)", node, anywhere=True)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in REACH_MODULES:
                self._flag(f"import {alias.name} (reaches into the grader's process)", node, anywhere=True)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module.split(".")[0] in REACH_MODULES or any(module == p or module.startswith(p + ".") for p in REACH_PREFIXES):
            self._flag(f"from {module} import ... (reaches into the grader's process)", node, anywhere=True)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and (FORBIDDEN_NAME.fullmatch(node.value) or node.value in REACH_ATTRIBUTES):
            self._flag(f"the string {node.value!r} (a name looked up at run time)", node,
                       anywhere=node.value in REACH_ATTRIBUTES)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._reach(node)
        if FORBIDDEN_NAME.fullmatch(node.attr):
            dotted = _dotted(node, self.aliases)
            if dotted is not None:
                self._flag(dotted, node)
            elif node.attr in ("softmax", "log_softmax", "logsumexp"):
                self._flag(f"Tensor.{node.attr}", node)  # a method call on some tensor
            self.generic_visit(node)
            return
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        target = self.aliases.get(node.id)
        if target is not None and FORBIDDEN_NAME.fullmatch(target.rsplit(".", 1)[-1]):
            self._flag(target, node)
        reach = self.reach_aliases.get(node.id)
        if reach is not None and self.owner is not None:
            self._flag(f"{reach} (reaches into the grader's process)", node)


def forbidden_uses(source: str) -> "dict[str, list[str]]":
    """Function/class name -> forbidden references inside it (empty if the file does not parse);
    ``"*"`` -> what reaches past the guards at module level (it taints every function)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {}  # the worker's import reports the syntax error with its line
    reach = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in REACH_MODULES:
                    reach[alias.asname or alias.name.split(".")[0]] = alias.name
    visitor = _Visitor(_aliases(tree), reach)
    try:
        visitor.visit(tree)
    except RecursionError:
        return {}
    return visitor.found
