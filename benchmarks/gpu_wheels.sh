#!/usr/bin/env bash
# Downloads, here, the wheels benchmarks/gpu_pong.py needs on a GPU machine that reaches no package index.
#
#   bash benchmarks/gpu_wheels.sh            # CPython 3.12 x86-64 wheels into .whl/ (git-ignored via info/exclude)
#   PY=3.11 bash benchmarks/gpu_wheels.sh /tmp/whl311   # other Python / folder (a CPU rehearsal here)
#
# The GPU image already holds numpy, JAX (CUDA), absl-py, rich, h5py, ml-dtypes, packaging, cloudpickle,
# typing-extensions, matplotlib and pillow; this fetches only what it lacks, at the versions the project is tested
# with, each --no-deps (their other needs are those already there). EnvPool's envpool-assets wheels (~600 MB of
# MuJoCo, VizDoom and football assets) are left out: gpu_pong.py runs Atari from ale-py's byte-identical ROMs.
# The folder travels with the working tree (64 MiB in all): name it in the device call's `carry`, and
# gpu_pong.py installs it (pip install --no-index --find-links .whl --no-deps --target /tmp/site) when it must.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
py=${PY:-3.12}
pip=${PIP:-python3 -m pip}
packages=(
    keras==3.15.1 namex==0.1.0 optree==0.20.0
    gymnasium==1.4.0 farama-notifications==0.0.6
    ale-py==0.12.1
    envpool==1.2.5 dm-env==1.6 dm-tree==0.1.10
)
mkdir -p "$dest"
# A folder in the repo is kept out of git (so out of the tracked tree) but `carry` can take it.
if [[ $dest != /* ]]; then
    exclude=$(git rev-parse --git-path info/exclude)
    grep -qxF "/${dest%/}/" "$exclude" 2>/dev/null || echo "/${dest%/}/" >>"$exclude"
fi
# pip matches each manylinux tag exactly: list the ones these wheels are built for.
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
$pip download --quiet --no-deps --only-binary=:all: --python-version "$py" --implementation cp "${platforms[@]}" \
    -d "$dest" "${packages[@]}"
ls -l "$dest"
bytes=$(du -cb "$dest"/*.whl | tail -1 | cut -f1)
echo "$(ls "$dest"/*.whl | wc -l) wheels, $((bytes / 1048576)) MiB (the device call carries 64 MiB with the tree)"
if [ "$bytes" -gt $((62 * 1048576)) ]; then
    echo "warning: over 62 MiB: the working tree may not fit beside it" >&2
fi
