"""A module that ends the program when it is imported (user code rbench must survive)."""

import sys

sys.exit(5)


def net():  # pragma: no cover - never reached
    return None
