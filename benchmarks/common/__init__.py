"""Helpers shared by the benchmark scripts (not part of the psearch package): the stages of the
generated worlds, scoring, the machine and the results-file options.

Benchmarks import them as ``from common import ...``: Python puts the running script's folder,
``benchmarks/``, first on the module path.
"""
