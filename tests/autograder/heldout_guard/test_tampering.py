"""Reaching past the guards: the dispatcher-level kernel watch, the static scans, the worker's audit watcher."""
from __future__ import annotations

import pathlib
import textwrap

import pytest
import torch
import torch.nn.functional as F

from autograder.checks.static_scan import forbidden_uses
from autograder.harness.common import install_guards
from autograder.harness.kernels import ForbiddenKernel, KernelWatch, forbidden_nodes
from autograder.harness.watch import Watcher
from autograder.heldout_guard.tampering import merge, scan_sources

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_reference_code_is_clean_for_both_scans():
    sources = {name: (REPO / "reference" / name).read_text() for name in ("model.py", "losses.py", "train.py")}
    assert scan_sources(sources) == [] and forbidden_uses(sources["losses.py"]) == {}


def test_grader_side_scan_reports_what_honest_code_never_needs():
    source = textwrap.dedent('''
        import ctypes, sys
        from inspect import currentframe
        def forward(x):
            frame = sys._getframe(1).f_back
            sys.modules["torch"] = None
            f = getattr(x, "__wrapped__")
            return exec("1")
    ''')
    details = [f["detail"] for f in scan_sources({"model.py": source, "notes.txt": "import gc"})]
    for expected in ("line 2: imports ctypes", "line 3: imports inspect", "sys._getframe", "f_back", "sys.modules",
                     "the string '__wrapped__'", "exec() (dynamic code)"):
        assert any(expected in d for d in details), (expected, details)
    assert not any("notes.txt" in d for d in details)  # only .py files are code
    assert merge([{"kind": "a", "detail": "x"}], [{"kind": "a", "detail": "x"}, "junk"]) == [{"kind": "a", "detail": "x"}]


def test_loss_scan_reports_reaching_past_the_guards_even_at_module_level():
    source = textwrap.dedent('''
        import torch
        import torch.nn.functional as F
        _raw = torch._C._nn.cross_entropy_loss.__wrapped__
        def cross_entropy(logits, target):
            return getattr(F, "cross_entropy")(logits, target)
        def softmax(x, dim=-1):
            import gc
            return x
    ''')
    found = forbidden_uses(source)
    assert any("__wrapped__" in f for f in found["*"]) and any("torch._C" in f for f in found["*"])
    assert found["cross_entropy"] == ["the string 'cross_entropy' (a name looked up at run time) (line 6)"]
    assert any("import gc" in f for f in found["softmax"])


def test_kernel_watch_refuses_forbidden_kernels_by_any_route():
    install_guards()  # as in the worker: the public names are guarded, the kernels are not
    logits, target = torch.randn(4, 5, requires_grad=True), torch.tensor([0, 1, 2, 3])
    routes = {
        "functional": lambda: F.cross_entropy(logits, target),
        "aten": lambda: torch.ops.aten._log_softmax(logits, 1, False),
        "closure": lambda: [c.cell_contents for c in F.cross_entropy.__closure__
                            if callable(c.cell_contents)][0](logits, target),
        "tensor method": lambda: logits.logsumexp(1),
        "mse": lambda: torch._C._nn.mse_loss(logits, logits.detach()),
    }
    assert not hasattr(F.cross_entropy, "__wrapped__")
    for name, route in routes.items():
        with KernelWatch([logits, target]) as watch:
            with pytest.raises(ForbiddenKernel):
                route()
        assert watch.forbidden, name


def test_kernel_watch_sees_results_made_behind_its_back_and_forbidden_graphs():
    logits, target = torch.randn(4, 5, requires_grad=True), torch.tensor([0, 1, 2, 3])
    with KernelWatch([logits, target]) as watch:
        with torch._C._DisableTorchDispatch():
            hidden = torch.log_softmax(logits, 1)
        honest = (logits - logits.amax(1, keepdim=True)).exp().sum()
        honest.backward()  # the backward pass runs inside the watch too
    assert watch.produced_outside(hidden) and not watch.produced_outside(honest)
    assert forbidden_nodes(hidden) == ["LogSoftmaxBackward0"] and forbidden_nodes(honest) == []
    assert "aten::exp" in watch.ops and watch.forbidden == []


def test_watcher_records_a_students_gc_and_frames_and_replaced_harness_objects(tmp_path, monkeypatch):
    (tmp_path / "snoop.py").write_text(textwrap.dedent('''
        import gc, inspect, traceback
        def run():
            gc.get_referrers(run)
            inspect.currentframe()
            try:
                1 / 0
            except ZeroDivisionError:
                traceback.format_exc()   # an honest traceback: not frame inspection
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    watcher = Watcher(submission=str(tmp_path))
    watcher.install()  # an audit hook stays for the process's life; it only reports files under tmp_path
    import snoop

    snoop.run()
    monkeypatch.setattr(F, "relu", lambda x: x)
    records = watcher.collect()
    kinds = [(r["kind"], r["detail"]) for r in records]
    assert ("gc", "gc.get_referrers from snoop.py, line 4") in kinds
    assert ("frame inspection", "sys._getframe from snoop.py, line 5") in kinds
    assert not any("tb_frame" in d for _, d in kinds)
    assert ("harness modified", "torch.nn.functional.relu was replaced by student code") in kinds
    assert watcher.collect() == []  # each record is reported once
