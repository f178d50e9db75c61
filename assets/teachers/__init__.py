"""The teachers family: ask a pool of teachers for an answer at every assistant step.

- ``ask.py``: the Dagster-free core (``await ask_teachers(steps, teachers, cache, budget)``)
- ``pool.py``: the teacher pool (YAML) and the ``teachers`` resource
- ``cache.py``: the Delta response cache (``silver/teacher_cache``)
- ``flags.py``: streaming checks that flag answers as they arrive
- ``tables.py``: the table specs; ``assets.py``: the thin Dagster wrappers and ``defs``
"""
