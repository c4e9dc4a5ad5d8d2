"""Result records: the schema (`schema`), append/read and the machine (`io`), one builder per kind (`builders`).

`bench.records` was one module before it became this package; its names are still reachable here,
loaded from `bench.records.builders` on first use.
"""

from bench import _names_from

__getattr__ = _names_from(__name__, "bench.records.builders")
