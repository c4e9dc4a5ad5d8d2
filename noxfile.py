"""Sessions: `nox -s lint tests` (README's test command), `nox -s docs` and `nox -s slow` (CI runs these three too),
`nox -s bench`, `nox -s regress`.

A torch environment is ~5.5 GB, so the sessions share the interpreter's site-packages
(`--system-site-packages`) and reuse their virtualenvs: install torch once into the base
Python (README's set-up command does). Every other dependency is upgraded into the session's own
virtualenv to the newest release setup.cfg admits, so the tests run on what a fresh install
resolves today, not on whatever older copy the machine holds (click 8.5 broke `--nproc` while the
machine's 8.4 kept the tests green); each test session prints the versions it runs on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

# The CPU machines install these from local disk; the cap is the machine's, not ours.
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
SHARED = {"venv_params": ["--system-site-packages"]}


#: The distributions whose versions a test log states (what the tests ran on).
REPORTED = ["torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "openvino", "ultralytics-thop", "click",
            "numpy", "scipy", "rich", "matplotlib", "scikit-learn", "mlcommons-loadgen", "pytest", "pytest-xdist"]
_VERSIONS = ("import importlib.metadata as m, sys\n"
             "def v(n):\n"
             "    try: return m.version(n)\n"
             "    except m.PackageNotFoundError: return 'not installed'\n"
             "print('tested on: ' + ', '.join(f'{n} {v(n)}' for n in sys.argv[1:]))")


def _install(session: nox.Session) -> None:
    # Eager upgrades install the newest admitted release of every dependency into this virtualenv,
    # shadowing older copies in the shared site-packages; torch stays the pinned build already there.
    session.install("--upgrade", "--upgrade-strategy", "eager", *TORCH, "-e", ".[test]")
    session.run("python", "-c", _VERSIONS, *REPORTED, silent=False)


def _pytest(session: nox.Session, marks: str, dist: str = "load") -> None:
    # -n auto: one worker per core (pytest-xdist); --dist load spreads tests one by one, loadfile keeps a file's
    # module fixtures (a whole smoke suite) in one worker instead of building them once per worker.
    session.run("python", "-m", "pytest", "-m", marks, "-n", "auto", "--dist", dist, "-p", "no:cacheprovider",
                *session.posargs)


@nox.session(**SHARED)
def tests(session: nox.Session) -> None:
    """The unit tests in parallel (CPU, a few minutes); GPU/TensorRT tests skip with their reason, `slow` ones wait for `nox -s slow`."""
    _install(session)
    _pytest(session, "not benchmark and not slow")


@nox.session(**SHARED)
def slow(session: nox.Session) -> None:
    """The slow end-to-end runs (whole smoke suites, sharded runs, multi-process studies): CI runs these too."""
    _install(session)
    _pytest(session, "slow and not benchmark", dist="loadfile")


@nox.session(**SHARED)
def lint(session: nox.Session) -> None:
    """ruff over the whole tree."""
    session.install("ruff>=0.5")
    session.run("python", "-m", "ruff", "check", ".")


@nox.session(**SHARED)
def bench(session: nox.Session) -> None:
    """pytest-benchmark micro-benchmarks, including the harness-overhead check."""
    _install(session)
    session.run("python", "-m", "pytest", "-m", "benchmark", "tests/benchmarks", "--benchmark-columns=min,median,max,iqr,ops",
                *session.posargs)


#: The fixed small set `nox -s regress` times: one cheap model on both CPU engines, one thread.
REGRESS_SET = ["latency", "resnet20", "--engine", "torch,ort", "--batch", "1", "--threads", "1", "--iters", "100",
               "--warmup", "20"]


@nox.session(**SHARED)
def regress(session: nox.Session) -> None:
    """Latency regressions: time REGRESS_SET now and `rbench diff` it against results/baselines/<this machine>/.

    Exit 1 when a pair is significantly slower than the baseline by more than 5%. Where no
    baseline matches this machine, it says how to make one and passes. `nox -s regress -- REV
    [rbench regress options]` instead times this checkout against git revision REV interleaved in
    one invocation (`rbench regress`), which holds on a machine whose speed drifts between runs.
    """
    _install(session)
    if session.posargs and not session.posargs[0].startswith("-"):
        session.run("rbench", "regress", *session.posargs)
        return
    new = Path(session.create_tmp()) / "regress-new"
    shutil.rmtree(new, ignore_errors=True)
    session.run("rbench", *REGRESS_SET, "--out", str(new))
    slug = session.run("python", "-c", "from bench.records.io import machine_slug; print(machine_slug())",
                       silent=True).strip()
    baseline = Path("results") / "baselines" / slug
    if not (baseline / "latency.jsonl").exists():
        session.log(f"no baseline for this machine ({slug}) in results/baselines/: nothing to compare. "
                    f"To make one on a quiet machine: mkdir -p {baseline} && cp {new}/latency.jsonl {baseline}/")
        return
    session.run("rbench", "diff", str(baseline), str(new), *session.posargs)


@nox.session(**SHARED)
def docs(session: nox.Session) -> None:
    """The documentation site in docs/: `mkdocs build --strict`, so a broken link, a missing anchor or a
    page left out of the nav fails the build. The site goes to a scratch folder, never into the tree."""
    import configparser

    # setup.cfg's `docs` extra holds the pin; installing only it spares the session rbench's own dependencies.
    config = configparser.ConfigParser()
    config.read("setup.cfg")
    session.install(*config["options.extras_require"]["docs"].split())
    site = Path(session.create_tmp()) / "site"
    session.run("mkdocs", "build", "--strict", "--site-dir", str(site), *session.posargs)
