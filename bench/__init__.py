"""rbench: train, export and benchmark the CNNs of residual-learning studies.

Kept import-light on purpose: `rbench --help` must not pay for importing torch.
"""

__version__ = "0.1.0"
