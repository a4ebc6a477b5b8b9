"""A synthetic person-search world written in the CUHK-SYSU or PRW format.

>>> from psearch.data.synth import generate_world
>>> summary = generate_world("world/", "cuhk", seed=0, preset="tiny")
"""

from psearch.data.synth.world import PRESETS, SynthConfig, generate_world, make_config

__all__ = ["PRESETS", "SynthConfig", "generate_world", "make_config"]
