"""Fail fast: once a student function has not returned in time, later calls that need it are not run.

TRUSTED side.  A ``forward`` that never returns would cost every item that calls it its whole
timeout (about 5 minutes for the assignment's rubric).  When a call times out, the worker is
asked where it is (``SIGUSR1``: the harness answers with the chain of student functions on its
stack, see ``harness/worker_main.py``) and the culprit is remembered for the rest of the submission;
a later call whose probe needs it returns at once with "not run: `forward` did not return within
60 s in item 1.2".  A worker that ignores the question is blamed on the probe's last student
function (:data:`PROBE_FUNCTIONS`).  For ``loss_calls`` only the calls of the culprit are dropped.

Example
-------
>>> hung = HungFunctions()
>>> hung.record(hung.culprit("model_forward", {}, ["NoteCNN.forward", "NoteCNN._block"]), 60.2, "1.2")
'forward'
>>> hung.blocked("heldout_logits", {})
'not run: `forward` did not return within 60 s in item 1.2'
>>> hung.blocked("model_summary", {}) is None
True
"""
from __future__ import annotations

from typing import Any

# The student functions each probe calls, in the order it calls them ("import:model" = importing model.py).
PROBE_FUNCTIONS: "dict[str, tuple[str, ...]]" = {
    "model_summary": ("import:model", "NoteCNN()"),
    "model_forward": ("import:model", "NoteCNN()", "forward"),
    "heldout_logits": ("import:model", "NoteCNN()", "forward"),
    "checkpoint_forward": ("import:model", "NoteCNN()", "forward"),
    "train_step": ("import:train", "train_one_epoch"),
    "train_overfit": ("import:train", "train_one_epoch"),
    "evaluate_modes": ("import:train", "evaluate"),
    "fit_early_stopping": ("import:train", "fit", "train_one_epoch", "evaluate"),
    "loss_calls": ("import:losses",),
}
_KNOWN = {"NoteCNN.__init__": "NoteCNN()", "NoteCNN.forward": "forward"}


def _name(qualname: str, module: str) -> str:
    """``NoteCNN.forward`` -> ``forward``; ``<module>`` of model.py -> ``import:model``."""
    if qualname == "<module>":
        return f"import:{module}"
    if qualname in _KNOWN:
        return _KNOWN[qualname]
    if qualname.endswith(".__init__"):
        return qualname[: -len(".__init__")] + "()"
    return qualname.rsplit(".", 1)[-1] if qualname.startswith("NoteCNN.") else qualname


def display(name: str) -> str:
    """How a student reads it: "`forward`", "importing model.py"."""
    return f"importing {name[7:]}.py" if name.startswith("import:") else f"`{name}`"


def functions_of(probe: str, args: dict) -> "tuple[str, ...]":
    names = PROBE_FUNCTIONS.get(probe, ())
    if probe == "loss_calls":
        names += tuple(str(call.get("fn")) for call in args.get("calls", []) if isinstance(call, dict))
    if probe == "import_module":
        names = (f"import:{args.get('module')}",)
    return names


class HungFunctions:
    """Student functions that did not return in time, for one submission."""

    def __init__(self) -> None:
        self.hung: "dict[str, str]" = {}

    def culprit(self, probe: str, args: dict, stack: "list[str] | None", modules: "list[str] | None" = None) -> "str | None":
        """Which function to blame: the innermost of ``stack`` (qualnames, outermost first) that the
        probe is known to call; else the probe's last student function (``NoteCNN.forward = _spin``
        is still ``forward``); for ``loss_calls`` (several functions) the outermost student frame."""
        needed = functions_of(probe, args)
        names = [_name(q, m) for q, m in zip(stack or [], modules or ["model"] * len(stack or []))]
        for name in reversed(names):
            if name in needed:
                return name
        if probe != "loss_calls" and needed:
            return needed[-1]
        return names[0] if names else None

    def record(self, name: "str | None", seconds: float, item: "str | None") -> "str | None":
        if name and name not in self.hung:
            where = f" in item {item}" if item else ""
            self.hung[name] = f"not run: {display(name)} did not return within {seconds:.0f} s{where}"
        return name

    def after_timeout(self, result: Any, probe: str, args: dict, *, timeout_s: float, item: "str | None") -> None:
        """Remember the culprit of a timed-out call and say it in ``result.message``."""
        stack = result.stack or []
        culprit = self.record(self.culprit(probe, args, [f[0] for f in stack], [f[1] for f in stack]),
                              result.seconds, item)
        if not culprit:
            return
        where = next((f"{f[1]}.py, line {f[2]}" for f in reversed(stack)), "")
        at = f" (it was at {where})" if where else ""
        if result.message.startswith("did not take the request"):  # the request pipe was left full
            result.message = f"the worker {result.message}: {display(culprit)} had not returned{at}"
        else:
            result.message = f"{display(culprit)} did not return within {timeout_s:.0f} s{at}"

    def blocked(self, probe: str, args: dict) -> "str | None":
        """The "not run" message when ``probe`` needs a hung function (loss calls: all of them hung)."""
        needed = functions_of(probe, args)
        if probe == "loss_calls":
            calls = [c for c in args.get("calls", []) if isinstance(c, dict)]
            if "import:losses" in self.hung:
                return self.hung["import:losses"]
            if calls and all(str(c.get("fn")) in self.hung for c in calls):
                return self.hung[str(calls[0].get("fn"))]
            return None
        for name in needed:
            if name in self.hung:
                return self.hung[name]
        return None

    def split_loss_calls(self, args: dict) -> "tuple[dict, list[dict]]":
        """(args without the calls of hung functions, ready-made failed results for those calls)."""
        kept, dropped = [], []
        for call in args.get("calls", []):
            name = str(call.get("fn")) if isinstance(call, dict) else ""
            if name in self.hung:
                dropped.append({"key": str(call.get("key")), "fn": name, "ok": False, "forbidden": [],
                                "error": {"kind": "not_run", "message": self.hung[name], "where": "", "traceback": ""}})
            else:
                kept.append(call)
        return {**args, "calls": kept}, dropped

    @staticmethod
    def merge_loss_results(value: Any, dropped: "list[dict]") -> Any:
        if dropped and isinstance(value, dict) and isinstance(value.get("calls"), list):
            value["calls"] = value["calls"] + dropped
        return value
