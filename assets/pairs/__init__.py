"""The pairs family: preference pairs and their data-juicer normalization, every drop explained.

- ``strategies.py``: pair strategies (error site, consensus, judge) over steps + teacher answers
- ``judge.py``: the pair judge (a model that scores answers) and its resource
- ``messages.py``: OpenAI message cleaning and hashing shared by the pairs and examples
- ``normalize.py``, ``dj_ops.py``, ``dj_env.py``: data-juicer recipes in process, our ops,
  the guard against run-time installs; ``normalizer.py``: the ``normalizer`` resource
- ``tables.py``: the table specs; ``assets.py``: the thin Dagster wrappers and ``defs``
"""
