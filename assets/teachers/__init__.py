"""The teachers asset family: ask a pool of teachers for an answer at every assistant step.

- ``ask.py``: the Dagster-free core (``await ask_teachers(steps, teachers, cache, budget)``)
- ``cache.py``: the Delta response cache (``silver/teacher_cache``)
- ``checks.py``: streaming checks that flag answers as they arrive
- ``assets.py``: the ``silver/teacher_responses`` asset
"""

import dagster as dg

from assets.teachers.assets import teacher_responses
from resources.teachers import TeacherPool

defs = dg.Definitions(
    assets=[teacher_responses],
    resources={"teachers": TeacherPool()},
)
