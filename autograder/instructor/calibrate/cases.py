"""The realistic student mistakes ``notegrade calibrate`` grades, generated from the reference at run time.

Instructor side only (never shipped, never vendored): each :class:`Mistake` turns the reference
solution (``reference/{model,losses,train}.py``) and a trained ``model.pt`` into one submission that
makes one common mistake, by exact text patches (a patch that no longer matches the reference is an
error naming the case, so the set can't silently go stale) and by writing ``model.pt`` the way the
mistake would.  The same builder serves ``notegrade calibrate`` and the self-check parity test.
A case marked ``free`` is correct code or a slip the grader tolerates (with a note): it must cost
nothing; every other case must cost at least 3 points under each shipped offering rubric
(``tests/instructor/calibrate/test_calibrate.py`` holds both, from ``docs/calibration.json``).

Example
-------
>>> len(MISTAKES) >= 15 and MISTAKES[0].name == "reference"
True
>>> [m.name for m in MISTAKES if m.category == "checkpoint"][:3]
['whole pickled model', 'DataParallel module. keys', 'empty model.pt']
>>> [m.name for m in MISTAKES if m.free]
['DataParallel module. keys', 'CUDA-saved model.pt', 'x.view flatten', 'F.max_pool2d pooling', 'nested folder']
"""
from __future__ import annotations

import io
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from autograder.errors import NotegradeError

REFERENCE = Path(__file__).resolve().parents[3] / "reference"
CODE_FILES = ("model.py", "losses.py", "train.py")
StateDict = "dict[str, torch.Tensor]"

BATCHNORM_INIT = ('        self.fc = nn.Linear(128 * 4 * 4, n_classes)\n',
                  '        self.fc = nn.Linear(128 * 4 * 4, n_classes)\n'
                  '        self.bn1, self.bn2 = nn.BatchNorm2d(16), nn.BatchNorm2d(32)\n'
                  '        self.bn3, self.bn4 = nn.BatchNorm2d(64), nn.BatchNorm2d(128)\n')
BATCHNORM_FORWARD = ('        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):\n'
                     '            x = self.pool(torch.relu(conv(x)))\n',
                     '        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3),\n'
                     '                         (self.conv4, self.bn4)):\n'
                     '            x = self.pool(torch.relu(bn(conv(x))))\n')
FUNCTIONAL_POOLING = [("from torch import nn\n", "from torch import nn\nimport torch.nn.functional as F\n"),
                      ("        self.pool = nn.MaxPool2d(2, 2)\n", ""),
                      ("x = self.pool(torch.relu(conv(x)))", "x = F.max_pool2d(torch.relu(conv(x)), 2)")]
SEQUENTIAL_MODEL = '''import torch
from torch import nn


class NoteCNN(nn.Module):
    """The same network, written as nn.Sequential: the layers get other names."""

    def __init__(self, n_classes: int = 11) -> None:
        super().__init__()
        blocks = []
        for c_in, c_out in ((1, 16), (16, 32), (32, 64), (64, 128)):
            blocks += [nn.Conv2d(c_in, c_out, kernel_size=3, padding="same"), nn.ReLU(), nn.MaxPool2d(2, 2)]
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(128 * 4 * 4, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
'''
SEQUENTIAL_KEYS = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.9",
                   "fc": "classifier"}
UNSTABLE_SOFTMAX = ("\n\ndef softmax(logits, dim=-1):\n    exps = logits.exp()\n"
                    "    return exps / exps.sum(dim=dim, keepdim=True)\n")
UNCLAMPED_BCE = ("\n\ndef binary_cross_entropy(prob, target):\n"
                 "    return -(target * torch.log(prob) + (1 - target) * torch.log(1 - prob)).mean()\n")
LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 480123\n")


@dataclass(frozen=True)
class Mistake:
    """One realistic mistake: its patches to the reference files and how it writes ``model.pt``."""

    name: str
    category: str  # checkpoint | architecture | losses | training | runtime | layout | none
    description: str
    patches: "dict[str, list[tuple[str, str]]]" = field(default_factory=dict)  # file -> [(old, new)], each must match
    append: "dict[str, str]" = field(default_factory=dict)  # file -> code appended (a later def wins)
    model_pt: "Callable[[dict, str], bytes] | None" = None  # (trained state_dict, this model.py) -> bytes
    folder: "str | None" = None  # the files sit in this folder of the upload (a zipped folder)
    model_py: "str | None" = None  # model.py written whole instead of patched
    free: bool = False  # correct, or tolerated with a note (under the default [checkpoint] policy): costs nothing


def _save(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _plain(state: dict, model_py: str) -> bytes:
    return _save(state)


def _without(key: str) -> "Callable[[dict, str], bytes]":
    return lambda state, model_py: _save({k: v for k, v in state.items() if k != key})


def _with_batchnorm(state: dict, model_py: str) -> bytes:
    extra = {}
    for index, channels in enumerate((16, 32, 64, 128), start=1):
        extra.update({f"bn{index}.{k}": v for k, v in torch.nn.BatchNorm2d(channels).state_dict().items()})
    return _save({**state, **extra})


def _renamed(state: dict, model_py: str) -> bytes:
    return _save({SEQUENTIAL_KEYS[k.split(".")[0]] + "." + k.split(".", 1)[1]: v for k, v in state.items()})


def _whole_model(state: dict, model_py: str) -> bytes:
    """``torch.save(model)``: pickles the student's class as ``model.NoteCNN``, as it would in their folder."""
    module = types.ModuleType("model")
    previous = sys.modules.get("model")
    sys.modules["model"] = module
    try:
        exec(compile(model_py, "model.py", "exec"), module.__dict__)  # noqa: S102 - the reference's own model.py
        model = module.NoteCNN()
        model.load_state_dict(state)
        return _save(model)
    finally:
        if previous is None:
            sys.modules.pop("model", None)
        else:
            sys.modules["model"] = previous


def _cuda_saved(state: dict, model_py: str) -> bytes:
    """A file saved from a GPU (its storages are tagged cuda:0), made without one."""
    import torch.serialization as serialization

    original = serialization.location_tag
    serialization.location_tag = lambda storage: "cuda:0"
    try:
        return _save(state)
    finally:
        serialization.location_tag = original


def _buffers_over_budget(state: dict, model_py: str) -> bytes:
    return _save({**state, "memo": torch.zeros(8192)})


MISTAKES: "tuple[Mistake, ...]" = (
    Mistake("reference", "none", "the reference solution and the trained model.pt (the baseline)", model_pt=_plain),
    # --- model.pt -----------------------------------------------------------------------------
    Mistake("whole pickled model", "checkpoint", "torch.save(model) instead of torch.save(model.state_dict())",
            model_pt=_whole_model),
    Mistake("DataParallel module. keys", "checkpoint", "saved from nn.DataParallel: every key starts with module.",
            model_pt=lambda state, py: _save({f"module.{k}": v for k, v in state.items()}), free=True),
    Mistake("empty model.pt", "checkpoint", "a 0-byte model.pt (an interrupted copy)", model_pt=lambda state, py: b""),
    Mistake("text model.pt", "checkpoint", "a text file named model.pt",
            model_pt=lambda state, py: b"the weights are in runs/first/model.pt\n"),
    Mistake("Git LFS pointer", "checkpoint", "the Git LFS pointer committed instead of the file",
            model_pt=lambda state, py: LFS_POINTER),
    Mistake("CUDA-saved model.pt", "checkpoint", "saved on a GPU (must keep working on the CPU)", model_pt=_cuda_saved,
            free=True),
    Mistake("training checkpoint", "checkpoint", "pipeline.py's checkpoint.pt submitted as model.pt",
            model_pt=lambda state, py: _save({"state_dict": state, "config": {"epochs": 10}, "metrics": {}})),
    Mistake("extra buffers over budget", "checkpoint", "model.pt carries 8,192 values beyond NoteCNN's parameters",
            model_pt=_buffers_over_budget),
    # --- model.py ---------------------------------------------------------------------------------
    Mistake("conv3 without bias", "architecture", "nn.Conv2d(32, 64, 3, bias=False), trained that way",
            patches={"model.py": [('nn.Conv2d(32, 64, kernel_size=3, padding="same")',
                                   'nn.Conv2d(32, 64, kernel_size=3, padding="same", bias=False)')]},
            model_pt=_without("conv3.bias")),
    Mistake("BatchNorm added", "architecture", "a BatchNorm2d after each convolution",
            patches={"model.py": [BATCHNORM_INIT, BATCHNORM_FORWARD]}, model_pt=_with_batchnorm),
    Mistake("nn.Sequential with other names", "architecture", "the right network as nn.Sequential (features.0, ...)",
            model_py=SEQUENTIAL_MODEL, model_pt=_renamed),
    Mistake("x.view flatten", "architecture", "x.view(x.size(0), -1) instead of torch.flatten (correct: costs nothing)",
            patches={"model.py": [("return self.fc(torch.flatten(x, 1))", "return self.fc(x.view(x.size(0), -1))")]},
            model_pt=_plain, free=True),
    Mistake("F.max_pool2d pooling", "architecture", "F.max_pool2d(x, 2) in forward, no pool module (correct: costs "
            "nothing)", patches={"model.py": FUNCTIONAL_POOLING}, model_pt=_plain, free=True),
    # --- losses.py --------------------------------------------------------------------------------
    Mistake("softmax without max-subtraction", "losses", "exp(z) / sum(exp(z)): overflows at large logits",
            append={"losses.py": UNSTABLE_SOFTMAX}, model_pt=_plain),
    Mistake("BCE without clamping", "losses", "log(0) at probabilities 0 and 1", append={"losses.py": UNCLAMPED_BCE},
            model_pt=_plain),
    Mistake("CE gradient not divided by N", "losses", "SoftmaxCrossEntropy.backward off by the batch mean",
            patches={"losses.py": [("return grad * (grad_output / grad.shape[0]), None", "return grad * grad_output, None")]},
            model_pt=_plain),
    # --- train.py ---------------------------------------------------------------------------------
    Mistake("fit keeps the last weights", "training", "fit stops early but does not restore the best weights",
            patches={"train.py": [("    model.load_state_dict(best_state)\n", "")]}, model_pt=_plain),
    Mistake("evaluate without eval()", "training", "evaluate runs in train mode (dropout/BatchNorm would misbehave)",
            patches={"train.py": [("    model.eval()\n", "")]}, model_pt=_plain),
    Mistake("no zero_grad", "training", "gradients accumulate across batches",
            patches={"train.py": [("        optimizer.zero_grad(set_to_none=True)\n", "")]}, model_pt=_plain),
    # --- the runtime and the upload ------------------------------------------------------------
    Mistake("import librosa", "runtime", "model.py imports a package the grading runtime lacks",
            patches={"model.py": [("\nimport torch\n", "\nimport torch\nimport librosa  # noqa: F401\n")]},
            model_pt=_plain),
    # tqdm is already loaded in the grader's own process (the toolkit's torch imports it), so only a
    # rule on every import statement, not on the import system, refuses it as Gradescope's venv does.
    Mistake("import tqdm", "runtime", "model.py imports a package the toolkit's torch has loaded already",
            patches={"model.py": [("\nimport torch\n", "\nimport tqdm  # noqa: F401\nimport torch\n")]},
            model_pt=_plain),
    Mistake("import tqdm in train.py", "runtime", "train.py imports a package the grading runtime lacks",
            patches={"train.py": [("\nimport torch\n", "\nimport tqdm  # noqa: F401\nimport torch\n")]},
            model_pt=_plain),
    Mistake("nested folder", "layout", "the files zipped inside a folder my_hw/", model_pt=_plain, folder="my_hw",
            free=True),
)


def _apply(mistake: Mistake, name: str, text: str) -> str:
    if name == "model.py" and mistake.model_py is not None:
        return mistake.model_py
    for old, new in mistake.patches.get(name, []):
        if text.count(old) < 1:
            raise NotegradeError(f"calibrate: the mistake {mistake.name!r} no longer applies to reference/{name} "
                                 f"({old.strip()[:60]!r} is not there); update autograder/instructor/calibrate/cases.py")
        text = text.replace(old, new, 1)
    return text + mistake.append.get(name, "")


def build(mistake: Mistake, dest: Path, *, state: dict) -> Path:
    """Write the submission of ``mistake`` into the new folder ``dest`` (``state``: the trained
    reference's state_dict); returns ``dest``."""
    root = dest / mistake.folder if mistake.folder else dest
    root.mkdir(parents=True)
    texts = {name: _apply(mistake, name, (REFERENCE / name).read_text(encoding="utf-8")) for name in CODE_FILES}
    for name, text in texts.items():
        (root / name).write_text(text, encoding="utf-8")
    if mistake.model_pt is not None:
        (root / "model.pt").write_bytes(mistake.model_pt(state, texts["model.py"]))
    return dest


def load_state(path: Path) -> dict:
    """The trained reference's state_dict from ``model.pt`` (or pipeline.py's ``checkpoint.pt``)."""
    from reference.evaluation import load_state_dict

    return load_state_dict(Path(path))
