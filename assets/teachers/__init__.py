"""The teachers family: ask a pool of teachers for an answer at every assistant step.

- ``pool.py``: the teacher pool (a teacher = a named spec of the one model client,
  ``resources/model_client.py``), spend-control settings, the ``TeacherPool`` resource
- ``ask.py``: the Dagster-free core (``await ask_teachers(steps, teachers, cache, budget)``),
  with the circuit breaker and the pre-filter
- ``cache.py``: the Delta response cache (``silver/teacher_cache``)
- ``flags.py``: streaming checks that flag answers as they arrive
- ``tables.py``: the table specs; ``assets.py``: the thin Dagster wrappers and ``defs``
"""
