"""The fixed text of the student handout (README body, Slurm example, requirements, .gitignore).

Pure data for :mod:`autograder.instructor.assign.handout`; ``README_BODY`` is a ``str.format`` template with
the fields ``files``, ``architecture``, ``selfcheck`` and ``grading``.  ``SELFCHECK_SCRIPT`` and
``SELFCHECK_INIT`` are the two hand-written files of the vendored self-check (``notegrade assign``).
"""

REQUIREMENTS = """\
# Python >= 3.10.  Install with:  pip install -r requirements.txt
# Linux without an NVIDIA GPU: first get the much smaller CPU build of PyTorch with
#   pip install torch torchaudio --index-url https://download.pytorch.org/whl/cpu
torch>=2.4
torchaudio>=2.4
numpy
soundfile
safetensors
tqdm
matplotlib
"""

GITIGNORE = """\
__pycache__/
.venv/
runs/
*.safetensors
nsynth-*/
*.tar.gz
slurm-*.out
"""

SBATCH = """\
#!/bin/bash
# Example Slurm batch job: build the feature files, then train NoteCNN on one GPU.
# Lines marked EDIT are specific to your cluster.  Submit from this folder with:
#     sbatch train_gpu.sbatch
# and follow it with  squeue -u "$USER"  and  tail -f slurm-notecnn-<jobid>.out
#SBATCH --job-name=notecnn
#SBATCH --partition=EDIT_gpu_partition
#SBATCH --account=EDIT_your_account
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=02:00:00
#SBATCH --output=slurm-%x-%j.out
# EDIT above: --partition = a GPU partition (list them with `sinfo -s`); --account = your
# allocation (delete that line if your cluster has none).  8 cores build the features quickly.
set -euo pipefail

# EDIT: how your cluster provides Python (see `module avail python`); delete if not needed.
module load python/3.11
# EDIT: the virtual environment where you ran `pip install -r requirements.txt`.
source "$HOME/venvs/notecnn/bin/activate"
# EDIT: the folder that holds nsynth-train/ and nsynth-valid/ (e.g. on the cluster's scratch disk).
NSYNTH_DIR="${NSYNTH_DIR:-$HOME/scratch/nsynth}"

cd "$SLURM_SUBMIT_DIR"
nvidia-smi --query-gpu=name,memory.total --format=csv || true   # which GPU we got (for the log)

# Features are built once and reused by later jobs (delete the files to rebuild).
# --workers: use the cores Slurm gave this job, not every core of the node.
WORKERS="${SLURM_CPUS_PER_TASK:-4}"
[ -f train.safetensors ] || python make_features.py --nsynth "$NSYNTH_DIR/nsynth-train" --out train.safetensors --workers "$WORKERS"
[ -f valid.safetensors ] || python make_features.py --nsynth "$NSYNTH_DIR/nsynth-valid" --out valid.safetensors --workers "$WORKERS"

# Uses the GPU automatically (device "auto").  The run folder is named after the job id.
python pipeline.py --train train.safetensors --valid valid.safetensors --out "runs/$SLURM_JOB_ID"
echo "submit runs/$SLURM_JOB_ID/model.pt together with model.py, losses.py and train.py"
"""

README_BODY = """\
# Instrument families from NSynth notes with a CNN: starter code

You will write, train and submit a small convolutional network that hears a 4-second note from
the [NSynth](https://magenta.tensorflow.org/datasets/nsynth) dataset (16 kHz, mono) and tells which
of 11 instrument families plays it: 0 bass, 1 brass, 2 flute, 3 guitar, 4 keyboard, 5 mallet,
6 organ, 7 reed, 8 string, 9 synth_lead, 10 vocal.  The network sees a 64x64 log-mel spectrogram
of the note, computed by the fixed front-end in `features.py`.

Your time goes to the model, the losses and the training loop.  Everything else (the front-end,
the NSynth loader, the feature files, the training driver) is given to you complete.

## What is in this folder

{files}

Every `raise NotImplementedError("TODO: ...")` in `model.py`, `losses.py` and `train.py` is one piece
for you to write; its message says what goes there.  Replace the `raise` line with your code and keep
the names, signatures and docstrings as they are: the autograder calls them exactly like that.

## Setup

Python 3.10 or newer, on Linux, macOS or Windows (WSL):

```bash
python3 -m venv .venv
source .venv/bin/activate
pip install -r requirements.txt
```

On Linux without an NVIDIA GPU, run `pip install torch torchaudio --index-url
https://download.pytorch.org/whl/cpu` before the last line: the CPU build of PyTorch is a much
smaller download and does everything this assignment needs.

## What to implement

### 1. `model.py`: `NoteCNN`

`NoteCNN(n_classes=11)` takes features of shape `(N, 1, 64, 64)` and returns logits of shape
`(N, n_classes)` (no softmax).  Four blocks of 3x3 convolution (`padding="same"`, with bias), ReLU
and 2x2 max-pooling, then a linear layer.  Use exactly these attribute names; `pool` is one
`nn.MaxPool2d(2, 2)` shared by all blocks (it has no parameters):

{architecture}

The grader counts the parameters of each layer and the output shape of each block, so anything extra
with parameters (for example a `BatchNorm2d`) changes the counts and costs points.

**Input scaling.**  The features are already scaled into a well-conditioned range by fixed
constants in `features.py`: `(dB - DB_OFFSET) / DB_SCALE` with `DB_OFFSET = {db_offset:g}` and
`DB_SCALE = {db_scale:g}`, so digital silence ({floor_db:g} dB) becomes {silence:g}.  The autograder feeds
exactly this output to your model.  Any further normalisation belongs *inside* the model as
buffers (`self.register_buffer("mean", torch.tensor(...))`), never as parameters, so that the
parameter counts above stay exact and the values travel in `model.pt`.

### 2. `losses.py`: losses written from scratch

Use elementary tensor operations only (`exp`, `log`, `sum`, `amax`, `clamp`, indexing, ...): no
`torch.nn.functional` losses, no `softmax` / `log_softmax` / `logsumexp` built-ins, no `nn.*Loss`
modules.  Every loss is mean-reduced, like PyTorch's default `reduction="mean"`.  The grader compares
values and gradients with PyTorch's functions in float64 and runs `torch.autograd.gradcheck`.
While your losses run, the grader watches which of PyTorch's kernels they reach, whatever name or
route reaches them (an alias, `torch.ops`, an unwrapped function), and the graph their result
hangs on; it also reads `losses.py` for references to PyTorch's internals (`torch._C`, `torch.ops`,
`__wrapped__`) and to `gc`.  Each of these fails the function concerned.

| function | definition |
|---|---|
| `l1_loss(pred, target)` | mean of `abs(pred - target)` |
| `mse_loss(pred, target)` | mean of `(pred - target) ** 2` |
| `softmax(logits, dim=-1)` | `exp(z - max z) / sum(exp(z - max z))` along `dim`; stable for large logits |
| `binary_cross_entropy(prob, target)` | mean of `-(t * log p + (1 - t) * log(1 - p))` with each log term clamped at -100, as PyTorch does: `prob` exactly 0 or 1 gives a finite loss and a finite gradient (never take `log(0)`) |
| `cross_entropy(logits, target)` | `logits` (N, C), `target` (N,) class indices: mean of `logsumexp(z_i) - z_i[target_i]`, with the max subtracted inside the log-sum-exp so that logits of magnitude 1e4 stay finite |
| `SoftmaxCrossEntropy` | a `torch.autograd.Function`: `forward(ctx, logits, target)` returns the `cross_entropy` value; your hand-written `backward` returns `(softmax(logits) - one_hot(target)) / N * grad_output` for the logits and `None` for the target |
| `l1_penalty(model)` | sum of `abs(w)` over every parameter whose name ends in `weight` (biases excluded) |
| `l2_penalty(model)` | sum of `w ** 2` over the same parameters (biases excluded, no factor 1/2) |

The penalties are the regularisation terms from the lectures: multiply one by your lambda and add it
to the loss (`pipeline.py --l1/--l2` does that).

### 3. `train.py`: the training loop

A `loader` is any iterable of `(features, labels)` batches; move each batch to `device` yourself.

- `train_one_epoch(model, loader, optimizer, loss_fn, device) -> float`: one pass in train mode
  (zero the gradients, forward, loss, backward, step per batch); returns the mean loss per example.
- `evaluate(model, loader, loss_fn, device) -> dict`: `{{"loss": ..., "accuracy": ...}}` in eval mode
  and without gradients; afterwards the model is back in the train/eval mode it had before.
- `fit(model, train_loader, valid_loader, *, optimizer, loss_fn, device, epochs, patience) -> list[dict]`:
  one dict per epoch with `epoch` (from 1), `train_loss`, `valid_loss`, `valid_accuracy`; stops after
  `patience` epochs without a new lowest validation loss and loads the best weights back into `model`.

The grader tells train mode, eval mode and gradients apart by what your functions *return*: its
test model behaves slightly differently in each mode, so the loss `evaluate` returns and the
weights `train_one_epoch` leaves show which modes really ran.

### Check your work as you go

The docstrings of `model.py`, `losses.py` and `train.py` hold small examples with their expected
output.  This command runs them and prints nothing once they all pass:

```bash
python -m doctest model.py losses.py train.py
```

## Get the data

**Real NSynth.**  Download the official `jsonwav` archives of the train and valid splits (over
20 GB, nearly all of it the train split) and unpack them next to this folder:

```bash
for split in train valid; do
    curl -LO http://download.magenta.tensorflow.org/datasets/nsynth/nsynth-$split.jsonwav.tar.gz
    tar xzf nsynth-$split.jsonwav.tar.gz      # -> nsynth-$split/examples.json + nsynth-$split/audio/*.wav
done
```

Train on `nsynth-train` and use `nsynth-valid` for early stopping.  The instruments of the valid
split never occur in train, so validation accuracy tells you how well you generalise to new
instruments, which is what grading measures.

**The rendered offline set.**  If your course hands out the smaller rendered set instead (notes
synthesised from General MIDI SoundFonts, in exactly the NSynth layout: `nsynth-train/`,
`nsynth-valid/`, `nsynth-test/`, each with `examples.json` and `audio/`), unpack it and use it in the
same way.  Your instructor makes it with the course toolkit; you only need the files.

## Compute the features

Turn each split into one feature file (float16 log-mel features, labels and note ids in a
[safetensors](https://huggingface.co/docs/safetensors) file).  This uses all your CPU cores and shows
its progress:

```bash
python make_features.py --nsynth nsynth-train --out train.safetensors
python make_features.py --nsynth nsynth-valid --out valid.safetensors
```

The full train split gives a file of about 2.4 GB, which is memory-mapped rather than read into RAM.
For a quicker first run on a laptop, build a subset with the filters (`python make_features.py --help`
lists them all), for example `--pitch-range 48-84 --velocities 75,100`.

## Train

**On a laptop CPU:**

```bash
python pipeline.py --train train.safetensors --valid valid.safetensors --out runs/first
```

`runs/first/` then holds `model.pt` (what you submit), `checkpoint.pt`, `history.csv`/`history.json`,
`curves.png` (loss and accuracy per epoch) and `config.json`.  It trains with your `NoteCNN`, your
`cross_entropy` and your `fit`, with channels_last tensors (faster convolutions).  A `forward` that
flattens with `x.view(x.size(0), -1)` is correct but cannot take channels_last input: `pipeline.py`
then says so in one line and trains with ordinary tensors (`torch.flatten(x, 1)` keeps the fast path).  `python pipeline.py --help` lists the
options (`--epochs`, `--patience`, `--optimizer`, `--lr`, `--l1`, `--l2`, `--loss softmax_cross_entropy`
to train with your own backward, `--seed`, ...).  Training uses a GPU automatically when PyTorch sees one.

**As a Slurm batch job on a GPU cluster:** copy this folder to the cluster, create the virtual
environment there, edit the lines marked `EDIT` in `train_gpu.sbatch` (partition, account, Python
module, virtual environment, data folder) and submit it:

```bash
sbatch train_gpu.sbatch
squeue -u "$USER"                     # is it running?
tail -f slurm-notecnn-<jobid>.out     # its log; the model lands in runs/<jobid>/model.pt
```

{submit}
{selfcheck}{grading}"""

SUBMIT_SECTION = """\
## What to submit

Upload these four files to Gradescope: {files}.  Any of these layouts works:

- the four files themselves (drag them into the upload dialog), or a zip of them;
- a zip of a folder that holds them (e.g. `my_hw/model.py`): Gradescope unpacks it to `my_hw/`, and
  the autograder grades that folder, with a note saying so.

Only those four files are graded.  Anything else in the upload is ignored, with a note listing it
(`__MACOSX/`, `.DS_Store` and `__pycache__/` silently): the grader never copies data files next to
your code.  A file with the right name in the wrong place (`Model.py`, `code/model.py`) is named in
a note with the rename that fixes it.

- `model.py`, `losses.py`, `train.py` may import only `torch` and the Python standard library: the
  grader runs them in its own environment, which has the packages of its `requirements.txt` (torch,
  numpy, safetensors, gradescope-utils and torch's own dependencies) and nothing else.  An import of
  anything else (`import librosa`) fails there with `No module named 'librosa'`, and the self-check
  says the same, naming the file and line.
- `model.pt`: a plain `state_dict` of your `NoteCNN` (`torch.save(model.state_dict(), "model.pt")`,
  which is what `pipeline.py` writes), about 0.5 MB.  The grader loads it with
  `torch.load("model.pt", weights_only=True)`, so it must hold tensors only.  It may hold NoteCNN's
  119,691 parameters plus at most {budget} other values (buffers such as normalisation constants);
  a larger file is refused with the names and sizes of the extra tensors.  The usual mistakes, each
  with its own message: `torch.save(model)` (pickles your class: save the `state_dict`),
  `checkpoint.pt` instead of `model.pt`, an empty file, or the Git LFS pointer instead of the file
  (`git lfs pull`).  A file saved on a GPU loads on the grader's CPU.  {prefix}

```bash
python -c "import torch; from model import NoteCNN; m = NoteCNN(); m.load_state_dict(torch.load('runs/first/model.pt', weights_only=True)); print('model.pt loads')"
```
"""
PREFIX_ACCEPT = ("Keys saved from `nn.DataParallel` (`module.conv1.weight`) are read without the prefix, with a "
                 "note; save `model.module.state_dict()` to avoid it.")
PREFIX_REFUSE = ("Keys saved from `nn.DataParallel` (`module.conv1.weight`) are refused: save "
                 "`model.module.state_dict()` instead.")

SELFCHECK_SECTION = """\
## Check your work before submitting

`selfcheck.py` runs the autograder's {count} visible checks ({points} points) on your files, with the same
points and the same messages as Gradescope, in well under a minute on a laptop CPU (Linux, or WSL on
Windows; no GPU needed):

```bash
python selfcheck.py                                      # model.py, losses.py, train.py, model.pt in this folder
python selfcheck.py --model runs/first/model.pt          # the model.pt that pipeline.py wrote
python selfcheck.py --json > selfcheck.json              # the same report as data
```

It prints a table of the items with the points each earns, then every message, then your total of
the visible points; its exit status is 0 when every visible item passes.  It checks a copy of exactly
the four files you submit, so a `model.py` that imports another file of this folder fails here as it
would on Gradescope.  `_selfcheck/` is a copy of the autograder's checks: do not edit it.
"""

SELFCHECK_ACCURACY = """\
The held-out notes and their labels stay on Gradescope, so item {items} cannot run here as graded.
With `--features valid.safetensors` (your validation features, see "Compute the features") it runs
the same check on your own validation notes and reports "validation accuracy (your file), not the
held-out score": an estimate, since the held-out instruments differ from yours.  It uses at most
4,096 of your notes, evenly spaced, to stay well under a minute (`--max-notes 0` uses them all).
Without `--features`, `model.pt` is still loaded into your `NoteCNN` and run on a few synthetic notes,
so a `model.pt` that Gradescope would refuse is refused here with the same message; only the accuracy
is reported as not run.

```bash
python selfcheck.py --model runs/first/model.pt --features valid.safetensors
```
"""

SELFCHECK_INIT = '''\
"""The notegrade self-check, vendored into this folder by `notegrade assign`: do not edit it.

The Gradescope autograder's checks (``checks/``), the worker that runs your code (``harness/``),
its sandbox and the per-item loop, under this private package name; the visible rubric items are
in ``rubric.json``.  Run it with ``python selfcheck.py`` in the folder above.
"""

__version__ = "{version}"
'''

SELFCHECK_SCRIPT = '''\
"""Check your work before you submit: the autograder's visible checks, run on this folder.

    python selfcheck.py                                   # model.py, losses.py, train.py, model.pt here
    python selfcheck.py --model runs/first/model.pt --features valid.safetensors
    python selfcheck.py --json > selfcheck.json           # the same report as data
    python selfcheck.py --help

The same checks as on Gradescope, with the same points and messages, run on a copy of the four
files you submit.  The held-out accuracy item runs on your own validation features (--features):
an estimate, not your held-out score.  Exit status 0: every visible item passes (or only needs
--features).  The checks are in _selfcheck/ (generated by the course toolkit: do not edit).  Linux
or WSL, Python 3.10 or newer.
"""
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_selfcheck():
    """Import _selfcheck/ without putting this folder on sys.path: the checks never import your code
    (it runs in a separate worker process), so model.py or train.py can't shadow anything here."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    spec = importlib.util.spec_from_file_location("_selfcheck", HERE / "_selfcheck" / "__init__.py",
                                                  submodule_search_locations=[str(HERE / "_selfcheck")])
    package = importlib.util.module_from_spec(spec)
    sys.modules["_selfcheck"] = package
    spec.loader.exec_module(package)
    from _selfcheck import selfcheck

    return selfcheck


if __name__ == "__main__":
    if sys.version_info < (3, 10):
        sys.exit("selfcheck.py needs Python 3.10 or newer")
    sys.exit(load_selfcheck().command_line(prog="python selfcheck.py", default_directory=HERE))
'''
