"""Reference training driver and evaluation: outputs, determinism, CLI, bad input."""
import json

import pytest
import torch

from autograder.cli import main as cli
from autograder.errors import NotegradeError
from reference import evaluation, pipeline
from reference.make_features import build_feature_file
from reference.model import NoteCNN
from testkit.nsynth_factory import make_nsynth_split


@pytest.fixture(scope="module")
def feature_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    files = {}
    for split, n, seed in (("train", 6, 1), ("valid", 2, 2)):
        split_dir = make_nsynth_split(root, split=split, n_per_family=n, seed=seed)
        files[split] = root / f"{split}.safetensors"
        build_feature_file(nsynth=split_dir, out=files[split])
    return files


def _train(files, out, **overrides):
    config = pipeline.TrainConfig(epochs=2, patience=2, batch_size=16, threads=2, **overrides)
    return pipeline.main(train=files["train"], valid=files["valid"], out=out, config=config)


def test_train_writes_submission_checkpoint_history_and_plot(feature_files, tmp_path):
    result = _train(feature_files, tmp_path / "run", l2=1e-4)
    out = tmp_path / "run"
    for name in ("model.pt", "checkpoint.pt", "history.csv", "history.json", "curves.png", "config.json"):
        assert (out / name).stat().st_size > 0, name
    state = torch.load(out / "model.pt", weights_only=True)
    NoteCNN().load_state_dict(state)  # a plain state_dict of exactly this architecture
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["config"]["l2"] == 1e-4 and checkpoint["config"]["epochs"] == 2
    assert checkpoint["metrics"]["valid_accuracy"] == result["metrics"]["valid_accuracy"]
    assert len(checkpoint["history"]) == len(result["history"]) == 2
    assert (out / "history.csv").read_text().splitlines()[0] == "epoch,train_loss,valid_loss,valid_accuracy"


def test_same_seed_same_weights_on_cpu(feature_files, tmp_path):
    _train(feature_files, tmp_path / "a", seed=3)
    _train(feature_files, tmp_path / "b", seed=3)
    _train(feature_files, tmp_path / "c", seed=4)
    a, b, c = (torch.load(tmp_path / d / "model.pt", weights_only=True) for d in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_evaluate_cli_writes_metrics_and_confusion(feature_files, tmp_path, capsys):
    _train(feature_files, tmp_path / "run")
    code = cli(["evaluate", "--model", str(tmp_path / "run" / "checkpoint.pt"),
                "--features", str(feature_files["valid"]), "--out", str(tmp_path / "eval")])
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics) >= {"accuracy", "per_family", "confusion"}
    assert len(metrics["confusion"]) == 11 and sum(map(sum, metrics["confusion"])) == 22
    diagonal = sum(metrics["confusion"][i][i] for i in range(11))
    assert metrics["accuracy"] == pytest.approx(diagonal / 22)
    assert (tmp_path / "eval" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "accuracy" in capsys.readouterr().out


def test_evaluate_refuses_wrong_architecture_and_garbage(feature_files, tmp_path):
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(NotegradeError, match="does not fit the reference NoteCNN") as refused:
        evaluation.main(checkpoint=tmp_path / "other.pt", features=feature_files["valid"], out=tmp_path / "e")
    # Every key by name, never torch's cut-off list or its ANSI escapes.
    message = str(refused.value)
    assert "conv1.weight (16, 1, 3, 3)" in message and "model.pt has weight (2, 3), bias (2,)" in message
    assert "\x1b[" not in message and "..." not in message
    torch.save(NoteCNN(), tmp_path / "whole.pt")
    with pytest.raises(NotegradeError, match=r"whole.pt holds a whole pickled model \(reference.model.NoteCNN\), "
                                             "not a state_dict") as refused:
        evaluation.main(checkpoint=tmp_path / "whole.pt", features=feature_files["valid"], out=tmp_path / "e")
    assert "\x1b[" not in str(refused.value) and "Please" not in str(refused.value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(NotegradeError, match=r"junk.pt is a text file \(16 bytes, starting 'not a checkpoint'\)"):
        evaluation.main(checkpoint=tmp_path / "junk.pt", features=feature_files["valid"], out=tmp_path / "e")
    with pytest.raises(NotegradeError, match="does not exist"):
        evaluation.main(checkpoint=tmp_path / "none.pt", features=feature_files["valid"], out=tmp_path / "e")


@pytest.mark.parametrize("content, message", [
    (b"", "is empty: 0 bytes; save your weights with torch.save(model.state_dict(), \"model.pt\")"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 482133\n",
     "is a Git LFS pointer, not the weights: run `git lfs pull` (or download the file itself)"),
    ("training", "is a training checkpoint (keys epoch, model, optimizer), not the model's state_dict: "
                 "save checkpoint['model'] instead"),
])
def test_evaluate_gives_the_graders_message_for_a_broken_checkpoint(tmp_path, capsys, content, message):
    """Instructor side, the student side's messages (autograder/checks/checkpoint.py), naming the file:
    never torch's "EOFError" or "Please file an issue ... WeightsUnpickler error"."""
    path = tmp_path / "model.pt"
    if content == "training":
        torch.save({"model": NoteCNN().state_dict(), "optimizer": {}, "epoch": 3}, path)
    else:
        path.write_bytes(content)
    code = cli(["evaluate", "--checkpoint", str(path), "--features", str(tmp_path / "unused.safetensors"),
                "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert code == 1 and f"{path} {message}" in err, err
    assert "EOFError" not in err and "Please file an issue" not in err and "submit" not in err


def test_train_cli_bad_usage_and_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(["train", "--train", "x", "--valid", "y", "--out", str(tmp_path), "--optimizer", "rmsprop"])
    assert exit_info.value.code == 2
    code = cli(["train", "--train", str(tmp_path / "missing.safetensors"), "--valid", "y", "--out", str(tmp_path)])
    assert code == 1
    assert "missing.safetensors" in capsys.readouterr().err


class ViewNoteCNN(NoteCNN):
    """A correct student model that flattens with x.view(x.size(0), -1): fails on channels_last input."""

    def forward(self, x):
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = self.pool(torch.relu(conv(x)))
        return self.fc(x.view(x.size(0), -1))


def test_a_model_using_view_trains_with_a_one_line_note(feature_files, tmp_path, monkeypatch, capsys):
    with pytest.raises(RuntimeError, match="view size is not compatible"):  # what used to crash the driver
        ViewNoteCNN().to(memory_format=torch.channels_last)(torch.zeros(2, 1, 64, 64).contiguous(
            memory_format=torch.channels_last))
    monkeypatch.setattr(pipeline, "NoteCNN", ViewNoteCNN)
    result = _train(feature_files, tmp_path / "view")
    assert len(result["history"]) == 2 and (tmp_path / "view" / "model.pt").is_file()
    err = capsys.readouterr().err
    assert "note: your NoteCNN.forward does not accept channels_last input" in err
    assert json.loads((tmp_path / "view" / "config.json").read_text())["channels_last"] is False
    assert pipeline.channels_last_works(NoteCNN(), torch.device("cpu"))  # the reference keeps the fast path
