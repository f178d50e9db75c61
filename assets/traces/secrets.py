"""Secret scrubbing lives in :mod:`resources.privacy.secrets` (used by every family and by
the model clients); this module re-exports it for the trace family."""

from resources.privacy.secrets import *  # noqa: F401,F403
from resources.privacy.secrets import _scrub_sparse, _bulk_gate_pattern  # noqa: F401
