"""model.pt on the trusted side (autograder/checks/checkpoint.py): each common mistake's message, the
``module.`` prefix policy, CUDA-saved files, the buffer budget, and the ``[checkpoint]`` rubric table."""
from __future__ import annotations

import io
import re

import pytest
import torch

from autograder.checks import checkpoint
from autograder.checks.architecture import TOTAL_PARAMS
from autograder.errors import NotegradeError
from autograder.instructor.calibrate import cases
from autograder.rubric import parse_rubric
from testkit.autograder_dir import RENDERED_RUBRIC
from testkit.sandbox_support import reference_state_dict

MODEL_PY = (cases.REFERENCE / "model.py").read_text()


def _bytes(mistake_name: str, state: dict) -> bytes:
    mistake = next(m for m in cases.MISTAKES if m.name == mistake_name)
    return mistake.model_pt(state, MODEL_PY)


@pytest.fixture(scope="module")
def state():
    return reference_state_dict(0)


@pytest.mark.parametrize("name, message", [
    ("empty model.pt", "model.pt is empty: 0 bytes; save your weights with torch.save(model.state_dict(), \"model.pt\")"),
    ("Git LFS pointer", "model.pt is a Git LFS pointer, not the weights: run `git lfs pull`"),
    ("text model.pt", "model.pt is a text file (39 bytes, starting 'the weights are in runs/first/model.pt'), not "
                      "PyTorch weights"),
    ("whole pickled model", "model.pt holds a whole pickled model (model.NoteCNN), not a state_dict: torch.save(model) "
                            "also pickles your class"),
    ("training checkpoint", "model.pt is a training checkpoint (keys config, metrics, state_dict), not the model's "
                            "state_dict"),
])
def test_each_common_mistake_gets_its_own_message(name, message, state):
    with pytest.raises(checkpoint.CheckpointRefused) as refused:
        checkpoint.read_checkpoint(_bytes(name, state))
    text = str(refused.value)
    assert text.startswith(message), text
    assert "Please" not in text and "WeightsUnpickler" not in text and "\x1b[" not in text  # none of torch's boilerplate


@pytest.mark.parametrize("inner", ["model", "model_state_dict", "net"])
def test_a_training_loops_checkpoint_dict_says_which_entry_to_save(inner, state):
    """Issue 19.4: {'model', 'optimizer', 'epoch'} names the entry to save, not "entries that are not tensors"."""
    data = torch_bytes({inner: state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3})
    with pytest.raises(checkpoint.CheckpointRefused) as refused:
        checkpoint.read_checkpoint(data)
    text = str(refused.value)
    assert text.startswith("model.pt is a training checkpoint (keys epoch, ") and \
        f"save checkpoint[{inner!r}] instead: torch.save(checkpoint[{inner!r}], 'model.pt')" in text, text
    assert "not tensors" not in text


def test_module_prefix_is_read_with_a_note_or_refused_with_the_fix(state):
    data = _bytes("DataParallel module. keys", state)
    read = checkpoint.read_checkpoint(data)
    assert sorted(read.arrays) == sorted(state) and read.notes[0].startswith("note: model.pt's keys start with 'module.'")
    with pytest.raises(checkpoint.CheckpointRefused, match=re.escape("save model.module.state_dict() instead, or fix "
                                                                     "the file with: python -c")):
        checkpoint.read_checkpoint(data, policy={"module_prefix": "refuse"})


def test_a_cuda_saved_checkpoint_loads_on_the_cpu(state):
    data = _bytes("CUDA-saved model.pt", state)
    assert b"cuda:0" in data
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):  # what a plain torch.load would do here
            torch.load(io.BytesIO(data), weights_only=True)
    read = checkpoint.read_checkpoint(data)
    assert all(torch.equal(torch.from_numpy(read.arrays[k]), v) for k, v in state.items())


def test_buffers_up_to_the_budget_and_not_one_value_more(state):
    assert checkpoint.read_checkpoint(checkpoint_bytes := torch_bytes({**state, "mean": torch.zeros(4096)})).values \
        == TOTAL_PARAMS + 4096
    assert checkpoint_bytes
    with pytest.raises(checkpoint.CheckpointRefused) as refused:
        checkpoint.read_checkpoint(torch_bytes({**state, "mean": torch.zeros(4096), "std": torch.zeros(1)}))
    text = str(refused.value)
    assert text.startswith(f"model.pt holds {TOTAL_PARAMS + 4097:,} values: more than NoteCNN's 119,691 parameters "
                           "plus 4,096 values of buffers")
    assert "mean 4096 (4,096 values), std 1 (1 value)" in text
    # The memorised-test-split attack of issue 10: a projection, the keys of every test note, their labels.
    attack = {**state, "proj": torch.zeros(4096, 32), "keys": torch.zeros(4096, 32), "labels": torch.zeros(4096)}
    with pytest.raises(checkpoint.CheckpointRefused, match=r"keys 4096x32 \(131,072 values\), proj 4096x32"):
        checkpoint.read_checkpoint(torch_bytes(attack))
    # The rubric's budget decides.
    assert checkpoint.read_checkpoint(torch_bytes(attack), policy={"buffer_budget": 300_000}).values > TOTAL_PARAMS


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_checkpoint_rubric_table_defaults_and_validation():
    text = RENDERED_RUBRIC.read_text()
    rubric = parse_rubric(text)
    assert rubric.checkpoint == {"buffer_budget": 4096, "module_prefix": "accept"}
    assert rubric.submission_files == ("model.py", "losses.py", "train.py", "model.pt")
    custom = parse_rubric(text + '\n[checkpoint]\nbuffer_budget = 0\nmodule_prefix = "refuse"\n'
                                 '[submission]\nfiles = ["model.py", "model.pt"]\n')
    assert custom.checkpoint == {"buffer_budget": 0, "module_prefix": "refuse"}
    assert custom.submission_files == ("model.py", "model.pt") and custom.rubric_hash != rubric.rubric_hash
    with pytest.raises(NotegradeError, match=r"checkpoint: module_prefix 'strip' is not one of accept, refuse.*"
                                             r"submission: files must be a non-empty list of plain file names"):
        parse_rubric(text + '\n[checkpoint]\nmodule_prefix = "strip"\n[submission]\nfiles = ["../x.npy"]\n')


def test_a_zip_bomb_is_refused_before_torch_reads_it(state):
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (80 << 20))  # 80 MB of zeros deflate to ~80 KB
    assert len(buffer.getvalue()) < 1 << 20
    with pytest.raises(checkpoint.CheckpointRefused, match="model.pt unpacks to 80 MB"):
        checkpoint.read_checkpoint(buffer.getvalue())
    with pytest.raises(checkpoint.CheckpointRefused, match="damaged zip archive"):
        checkpoint.read_checkpoint(torch_bytes(state)[:5000])
