"""The fault suite: bad session files, planted secrets of every kind, a teacher that fails in
every way, a run killed with SIGKILL while the teachers are asked, two runs at once.

    .venv/bin/python benchmarks/fault_suite.py            # full suite (~3-5 min on 2 cores)
    .venv/bin/python benchmarks/fault_suite.py --quick    # what tests/faults runs in CI

The suite itself is testsupport/faults.py (the CI test imports it from there).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testsupport.faults import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
