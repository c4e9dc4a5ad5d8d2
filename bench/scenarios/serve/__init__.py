"""Serving scenarios under MLPerf LoadGen: SingleStream, MultiStream, Server and Offline on any engine.

    settings.py   the scenarios, ServeConfig (MLPerf's defaults, rbench's overrides), LoadGen TestSettings
    qsl.py        the query sample library over a real test split, loaded as LoadGen asks
    sut.py        the system under test: dynamic batching over a pool of engine workers
    data.py       the model source and the samples it is served with
    loadgen_log.py  LoadGen's detail and accuracy logs read back
    run.py        `serve(...)` -> a `serve` record; the Server peak search; accuracy scoring
"""

from bench.scenarios.serve.run import serve
from bench.scenarios.serve.settings import SCENARIOS, ServeConfig, mlperf_defaults
from bench.scenarios.serve.sut import ModelFailure

__all__ = ["SCENARIOS", "ModelFailure", "ServeConfig", "mlperf_defaults", "serve"]
