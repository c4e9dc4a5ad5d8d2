"""Experiments built on the measuring core: the precision ladder (`ladder`) and dynamic vs static convolution
(`dynamic`, `dynamic_cost`).
"""
