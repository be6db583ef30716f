#!/usr/bin/env bash
# Set up (first run only) and start the web page on the default offline profile: http://127.0.0.1:7860
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/python app.py serve "$@"
