"""The teachers asset family: replay every assistant step against a pool of teachers.

- ``replay.py``: the Dagster-free core (``await replay(steps, teachers, cache, budget)``)
- ``cache.py``: the Delta response cache (``silver/teacher_cache``)
- ``checks.py``: streaming checks that flag answers as they arrive
- ``assets.py``: the ``silver/teacher_responses`` asset
"""

import dagster as dg

from assets.teachers.assets import teacher_responses
from assets.teachers.pool import TeacherPool

defs = dg.Definitions(
    assets=[teacher_responses],
    resources={"teachers": TeacherPool()},
)
