#!/usr/bin/env bash
# Runs the whole test suite (real Delta tables, a real Dagster instance, real local
# models and HTTP servers on 127.0.0.1). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
export TRACELAKE_TEST=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest tests "$@"
rc=$?
# pytest exits 5 when no test ran: that is a failure here, not a pass.
exit $rc
