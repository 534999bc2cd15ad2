"""A synthetic class with planted integrity cases, as a Gradescope export (tests and the benchmark).

Built on the export fixture (:mod:`autograder.instructor.demo.synthetic_class`), with real, seeded,
briefly trained models (a few seconds each on one CPU thread) on synthetic NSynth splits:

=================  =========================================================  =======================
student            submission                                                 expected flag
=================  =========================================================  =======================
8 honest students  own code (:mod:`testkit.honest_code`), own model, seeds 11-18  none
Sam Sharer         own code; model.pt is Alan Turing's file                   pair with Alan Turing
Fiona Tuner        own code; Grace Hopper's model, fine-tuned one epoch       pair with Grace Hopper
Cody Copier        Edsger Dijkstra's losses.py, variables renamed and         pair with Edsger Dijkstra
                   functions reordered; own model.py/train.py and model
Tess Tester        own code; model trained on the held-out split itself       student (train-on-test)
=================  =========================================================  =======================

Gradescope's recorded ``:results:`` follow the grader's integrity contract
(``extra_data["integrity"]``): Tess's says ``train_on_test.flagged: true`` with numbers like a
model that has seen the test notes; everyone else's says false.

Example
-------
>>> planted = planted_class(pathlib.Path(tempfile.mkdtemp()))     # doctest: +SKIP
>>> sorted(planted.expected_students)                              # doctest: +SKIP
['Tess Tester']
"""
from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import functools
import io
import pathlib
import tempfile

import torch

from autograder.instructor.demo.synthetic_class import DUE, ExportFixture, Student, Submission, make_export
from testkit.autograder_dir import RENDERED_RUBRIC, make_autograder_dir, rubric_text, write_feature_split
from testkit.honest_code import disguise, honest_files

HONEST = ("Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth", "Frances Allen",
          "John McCarthy", "Radia Perlman")
SHARER, TUNER, COPIER, TESTER = "Sam Sharer", "Fiona Tuner", "Cody Copier", "Tess Tester"
EXPECTED_PAIRS = {frozenset({"Alan Turing", SHARER}), frozenset({"Grace Hopper", TUNER}),
                  frozenset({"Edsger Dijkstra", COPIER})}
EPOCHS = 8


@dataclasses.dataclass(frozen=True)
class Assets:
    train: pathlib.Path  # 12 notes per family
    heldout: pathlib.Path  # 16 notes per family (kind heldout)
    autograder: pathlib.Path  # unpacked autograder directory with that held-out file


@functools.lru_cache(maxsize=None)
def assets() -> Assets:
    """Synthetic train and held-out files and an autograder directory, once per session."""
    from testkit.autograder_dir import ensure_worker_python

    ensure_worker_python()
    work = pathlib.Path(tempfile.mkdtemp(prefix="notegrade-integrity-"))
    train = write_feature_split(work / "train.safetensors", work=work / "train", n_per_family=12, seed=1, split="train")
    heldout = write_feature_split(work / "heldout.safetensors", work=work / "test", n_per_family=16, seed=2,
                                  kind="heldout", split="test")
    rubric = rubric_text(RENDERED_RUBRIC, zero_at=0.10, full_at=0.35)
    return Assets(train=train, heldout=heldout, autograder=make_autograder_dir(work / "autograder", rubric=rubric,
                                                                               heldout=heldout))


def train(data: pathlib.Path, *, seed: int, epochs: int = EPOCHS, start: dict | None = None, loss_fn=None) -> dict:
    """A NoteCNN trained with Adam on ``data`` from ``start`` (default: the init of ``seed``); its state_dict.

    ``loss_fn``: default ``torch.nn.functional.cross_entropy``.
    """
    import torch.nn.functional as F

    from autograder.featurefile import FeatureLoader, read_feature_file
    from reference.model import NoteCNN
    from reference.train import fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: far faster than two on a shared 2-core machine
    try:
        torch.manual_seed(seed)
        model = NoteCNN()
        if start is not None:
            model.load_state_dict(start)
        loader = FeatureLoader(read_feature_file(data), batch_size=32, shuffle=True, seed=seed, device="cpu")
        fit(model, loader, loader, optimizer=torch.optim.Adam(model.parameters(), lr=2e-3), loss_fn=loss_fn or F.cross_entropy,
            device="cpu", epochs=epochs, patience=epochs)
    finally:
        torch.set_num_threads(threads)
    return {k: v.clone() for k, v in model.state_dict().items()}


@functools.lru_cache(maxsize=None)
def trained_models() -> dict[str, dict]:
    """Every student's state_dict (cached for the session: ~12 trainings of a few seconds)."""
    a = assets()
    models = {name: train(a.train, seed=11 + i) for i, name in enumerate(HONEST)}
    models[TUNER] = train(a.train, seed=99, epochs=1, start=copy.deepcopy(models["Grace Hopper"]))
    models[COPIER] = train(a.train, seed=19)
    models[TESTER] = train(a.heldout, seed=20)
    return models


def _bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def integrity_results(*, flagged: bool, heldout_accuracy: float, train_accuracy: float) -> dict:
    """A recorded results.json carrying the grader's integrity verdicts (the contract of issue 10)."""
    reason = "scores as well on the test split as on training notes" if flagged else ""
    return {"score": 100.0, "tests": [{"name": "Held-out accuracy", "number": "4.1", "score": 30.0, "max_score": 30.0}],
            "extra_data": {"heldout_accuracy": heldout_accuracy, "integrity": {
                "train_on_test": {"flagged": flagged, "heldout_accuracy": heldout_accuracy,
                                  "train_accuracy": train_accuracy, "heldout_loss": 0.05 if flagged else 1.4,
                                  "train_loss": 0.3 if flagged else 0.6, "reason": reason},
                "tampering": []}}}


@dataclasses.dataclass
class PlantedClass:
    fixture: ExportFixture
    autograder: pathlib.Path
    heldout: pathlib.Path
    names: dict[str, str]  # submission key -> student name
    results: dict[str, dict]  # submission key -> the results.json Gradescope recorded (integrity contract)
    expected_pairs: set = dataclasses.field(default_factory=lambda: set(EXPECTED_PAIRS))
    expected_students: set = dataclasses.field(default_factory=lambda: {TESTER})


def planted_class(root: pathlib.Path, *, as_zip: bool = False) -> PlantedClass:
    """Write the planted class's export under ``root``."""
    a = assets()
    models = trained_models()
    code = {name: honest_files(i) for i, name in enumerate(HONEST + (SHARER, TUNER, COPIER, TESTER))}
    code[COPIER]["losses.py"] = disguise(code["Edsger Dijkstra"]["losses.py"])
    checkpoints = {name: _bytes(state) for name, state in models.items()}
    checkpoints[SHARER] = checkpoints["Alan Turing"]
    submissions, names, recorded = [], {}, {}
    for i, name in enumerate(HONEST + (SHARER, TUNER, COPIER, TESTER)):
        files = {k: v.encode() for k, v in code[name].items()}
        files["model.pt"] = checkpoints[name]
        sid = f"{200001 + i}"
        student = Student(name=name, sid=sid, email=f"{name.split()[0].lower()}@example.edu")
        results = integrity_results(flagged=name == TESTER, heldout_accuracy=0.99 if name == TESTER else 0.62,
                                    train_accuracy=0.70 if name == TESTER else 0.9)
        submissions.append(Submission(3001 + i, [student], DUE - dt.timedelta(hours=1 + i), "planted", 100.0,
                                      files=files, recorded_results=results))
        names[f"submission_{3001 + i}"] = name
        recorded[f"submission_{3001 + i}"] = results
    fixture = make_export(root, submissions=submissions, as_zip=as_zip, assignment_id=5151)
    return PlantedClass(fixture=fixture, autograder=a.autograder, heldout=a.heldout, names=names, results=recorded)
