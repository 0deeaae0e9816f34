#!/usr/bin/env bash
# Wheels of what r1jax (and tools/bench_trl_grpo.py's TRL peer) needs beyond an accelerator image that
# holds jax, flax, optax, orbax, torch, transformers, tokenizers, safetensors, pandas, pyarrow, accelerate
# (e.g. a CUDA box with no route to PyPI): downloaded here for CPython 3.12 / x86-64 Linux into DIR
# (default .whl), installed there with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site DIR/*.whl && export PYTHONPATH=/tmp/site:$PWD
# Usage: tools/fetch_gpu_wheels.sh [DIR] [PYTHON_VERSION]
set -euo pipefail
dir=${1:-.whl}
py=${2:-3.12}
pkgs=(
  grain array-record portpicker ml-collections tensorboardX             # r1jax's data pipeline and logging
  math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2   # the accuracy reward
  trl datasets dill multiprocess                                      # tools/bench_trl_grpo.py
)
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do plat+=(--platform "$p"); done
mkdir -p "$dir"
for p in "${pkgs[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    "${plat[@]}" -d "$dir" "$p"
done
ls "$dir"
