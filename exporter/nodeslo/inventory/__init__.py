"""The box as specified: what the host has (facts.py) against the profile (evaluate.py).

Shared by the inventory collector, which exports both, and `nodeslo check`, which gives
each line a verdict.
"""
