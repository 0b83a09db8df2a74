#!/bin/sh
# Regenerate the images' hashed lock files from pyproject.toml's extras. From the repository root:
#   python3.11 -m venv /tmp/uvtool && /tmp/uvtool/bin/pip install uv
#   UV=/tmp/uvtool/bin/uv docker/locks/compile.sh
# The CPU torch wheel comes from https://download.pytorch.org/whl/cpu (uv's --torch-backend cpu);
# where that index is out of reach, TORCH_CPU_WHEELS names a folder holding the same wheel file.
set -eu
UV=${UV:-uv}
CPU_INDEX=https://download.pytorch.org/whl/cpu

lock() {
    name=$1
    shift
    "$UV" pip compile pyproject.toml "$@" --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
        --generate-hashes --quiet -o "docker/locks/$name.txt"
}

# An image that loads models has torch (the forecasting extra): a pickled mlp model needs it to load.
# Every one but inference-cuda has torch's CPU build.
if [ -n "${TORCH_CPU_WHEELS:-}" ]; then torch_source="--find-links $TORCH_CPU_WHEELS"; else torch_source="--torch-backend cpu"; fi
lock_cpu_torch() {
    name=$1
    shift
    # shellcheck disable=SC2086  # two words on purpose
    lock "$name" "$@" --extra forecasting -c docker/locks/torch-cpu.constraints $torch_source
    # pip, in the image, must see the CPU index to find torch==X+cpu (its hash pins the very file).
    printf -- '--extra-index-url %s\n%s\n' "$CPU_INDEX" "$(cat "docker/locks/$name.txt")" >"docker/locks/$name.txt"
}

lock ingest --extra functions
lock_cpu_torch monitor --extra functions --extra drift
lock dashboard --extra dashboard
lock_cpu_torch control --extra functions --extra local --extra cluster --extra tracking
lock inference-cuda --extra functions --extra forecasting --extra cluster -c docker/locks/torch-cuda.constraints
lock_cpu_torch inference-cpu --extra functions --extra cluster
