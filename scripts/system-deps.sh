#!/usr/bin/env bash
# Debian packages the toolkit needs: FluidSynth + three GM SoundFonts (offline dataset),
# Docker + debootstrap (container grading tests), Chromium (class-report render test),
# bubblewrap + libseccomp2 (the sandbox's namespaces and network filter; util-linux: `unshare` in tests),
# slurm-wlm + munge (the one-node Slurm cluster the slurm-marked tests start).
# Idempotent: installs only what is missing.  Needs root or sudo.
set -euo pipefail
PACKAGES=(libfluidsynth3 fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont
          libsndfile1 docker.io debootstrap chromium python3-venv bubblewrap libseccomp2 util-linux slurm-wlm munge)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "system-deps: all Debian packages present"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "system-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
fi
echo "system-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
