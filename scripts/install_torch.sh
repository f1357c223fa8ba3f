#!/usr/bin/env bash
# Install PyTorch into the given interpreter's environment without pulling gigabytes of CUDA
# wheels onto a machine with no GPU:
#   - torch already importable          -> nothing to do
#   - an NVIDIA GPU is visible           -> the default (CUDA) build from PyPI
#   - a local CPU wheel is configured    -> that one (pip's find-links, e.g. an offline mirror)
#   - otherwise                          -> the CPU build from PyTorch's CPU index
set -euo pipefail
PY="${1:-python3}"
VERSION="${TORCH_VERSION:-2.13.0}"
if "$PY" -c "import torch" 2>/dev/null; then
    echo "torch already installed: $("$PY" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "$PY" -m pip install -q "torch>=2.9"
elif "$PY" -m pip install -q --no-deps --no-index "torch==$VERSION" 2>/dev/null; then
    "$PY" -m pip install -q "torch==$VERSION"          # now only its pure-Python dependencies
else
    "$PY" -m pip install -q "torch==$VERSION" --index-url https://download.pytorch.org/whl/cpu \
        --extra-index-url https://pypi.org/simple
fi
