#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (the zip is unpacked in
# /autograder/source).  It installs the grading runtime into /autograder/venv:
#   * a CPU-only build of torch: importing it costs ~220 MB RSS instead of ~620 MB for a CUDA build,
#     which is what lets grading fit Gradescope's default 768 MB; never torchaudio, never CUDA;
#   * the pinned grading dependencies of requirements.txt (numpy, safetensors, gradescope-utils, ...).
#
# Where the wheels come from is set by setup.conf beside this file (written by `notegrade build`);
# an environment variable of the same name overrides it:
#   WHEEL_SOURCE=index      torch from TORCH_INDEX_URL, everything else from PYPI_INDEX_URL (default).
#                           TORCH_INDEX_URL defaults to the PyTorch CPU wheel index,
#                           https://download.pytorch.org/whl/cpu
#   WHEEL_SOURCE=wheelhouse every wheel from FIND_LINKS (a directory, relative to this file or absolute),
#                           no index at all: for machines that cannot reach the PyTorch index.
#   FIND_LINKS              also searched in index mode when set.
#   NOTEGRADE_VENV          where the runtime goes (default /autograder/venv).
#
# Idempotent: a second run checks the installed runtime and changes nothing.  Any failure stops the
# build with a message naming the step (set -euo pipefail + an ERR trap).
set -euo pipefail
trap 'echo "setup.sh: FAILED (line $LINENO, exit $?): $BASH_COMMAND" >&2' ERR

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "setup.sh: $*"; }
die() { echo "setup.sh: ERROR: $*" >&2; exit 1; }

# --- configuration: defaults < setup.conf < environment -------------------------------------
declare -A CONF=(
    [WHEEL_SOURCE]=index
    [TORCH_INDEX_URL]=https://download.pytorch.org/whl/cpu
    [PYPI_INDEX_URL]=https://pypi.org/simple
    [FIND_LINKS]=
    [NOTEGRADE_VENV]=/autograder/venv
)
if [ -f "$HERE/setup.conf" ]; then
    # KEY=VALUE lines, parsed (never sourced): the file is data, not code.
    while IFS='=' read -r key value || [ -n "$key" ]; do
        case "$key" in ''|\#*) continue ;; esac
        [ -n "${CONF[$key]+set}" ] || die "setup.conf: unknown key '$key' (known: ${!CONF[*]})"
        CONF[$key]="$value"
    done < "$HERE/setup.conf"
fi
for key in "${!CONF[@]}"; do
    if [ -n "${!key+set}" ]; then CONF[$key]="${!key}"; fi
done
VENV="${CONF[NOTEGRADE_VENV]}"
FIND_LINKS="${CONF[FIND_LINKS]}"
if [ -n "$FIND_LINKS" ] && [[ "$FIND_LINKS" != /* ]] && [[ "$FIND_LINKS" != *://* ]]; then
    FIND_LINKS="$HERE/$FIND_LINKS"
fi
REQUIREMENTS="$HERE/requirements.txt"
[ -f "$REQUIREMENTS" ] || die "requirements.txt is missing beside setup.sh ($HERE)"
# Checked before anything is installed, so a bad setup.conf fails in a second.
case "${CONF[WHEEL_SOURCE]}" in
    index)
        SOURCE=(--index-url "${CONF[TORCH_INDEX_URL]}" --extra-index-url "${CONF[PYPI_INDEX_URL]}")
        [ -z "$FIND_LINKS" ] || SOURCE+=(--find-links "$FIND_LINKS")
        ;;
    wheelhouse)
        [ -n "$FIND_LINKS" ] || die "WHEEL_SOURCE=wheelhouse needs FIND_LINKS (a directory of wheels)"
        [[ "$FIND_LINKS" == *://* ]] || [ -d "$FIND_LINKS" ] || die "wheelhouse directory $FIND_LINKS does not exist"
        SOURCE=(--no-index --find-links "$FIND_LINKS")
        ;;
    *) die "WHEEL_SOURCE must be 'index' or 'wheelhouse', got '${CONF[WHEEL_SOURCE]}'" ;;
esac

# --- system packages: python3 (>= 3.10) with venv support ------------------------------------
have_python() {
    command -v python3 >/dev/null 2>&1 \
        && python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null \
        && python3 -c 'import ensurepip, venv' 2>/dev/null
}
if ! have_python; then
    command -v apt-get >/dev/null || die "python3 >= 3.10 with the venv module is missing and apt-get is not available"
    log "installing python3 + venv support with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates
    rm -rf /var/lib/apt/lists/*
    have_python || die "python3 >= 3.10 with venv is still not usable after apt-get install"
fi
log "using $(python3 --version)"

# --- the grading runtime ----------------------------------------------------------------------
# The stamp holds the hash of requirements.txt + the wheel source: same inputs -> nothing to do.
STAMP="$VENV/.notegrade-setup"
WANT="$( { cat "$REQUIREMENTS"; echo "${CONF[WHEEL_SOURCE]} ${CONF[TORCH_INDEX_URL]} $FIND_LINKS"; } | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] \
        && "$VENV/bin/python" -c 'import torch, numpy, safetensors, gradescope_utils' 2>/dev/null; then
    log "runtime in $VENV is already installed and current; nothing to do"
    FRESH=0
else
    FRESH=1
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input --no-cache-dir)
    log "installing requirements.txt (${CONF[WHEEL_SOURCE]}: ${SOURCE[*]})"
    # --only-binary: never compile anything at image build time; a missing wheel is an error.
    "${PIP[@]}" install --quiet --only-binary=:all: "${SOURCE[@]}" -r "$REQUIREMENTS"
fi

# --- verify: a CPU build of torch, no torchaudio, no CUDA libraries -----------------------------
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import sys

import torch

problems = []
if torch.version.cuda is not None or "+cu" in torch.__version__:
    problems.append(f"torch {torch.__version__} is a CUDA build; the grader needs the CPU build")
names = sorted({(d.metadata["Name"] or "").lower() for d in md.distributions()})
if "torchaudio" in names:
    problems.append("torchaudio is installed; the grading runtime must not have it")
cuda = [n for n in names if n.startswith("nvidia-") or n.startswith("cuda-")]
if cuda:
    problems.append("CUDA packages are installed: " + ", ".join(cuda))
if problems:
    sys.exit("setup.sh: ERROR: " + "; ".join(problems))
print(f"setup.sh: runtime ok: python {sys.version.split()[0]}, torch {torch.__version__} (CPU)")
PY
if [ "$FRESH" = 1 ]; then
    # The worker runs as an unprivileged user: it must read (never write) the runtime.  Only after
    # a fresh install: on a layered filesystem a chmod copies every file of the venv again.
    chmod -R go-w,a+rX "$VENV"
    echo "$WANT" > "$STAMP"
fi
log "done"
