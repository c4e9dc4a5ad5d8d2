"""CI sessions: `nox -s tests`, `nox -s lint`, `nox -s bench`.

A torch environment is ~5.5 GB, so the sessions share the interpreter's site-packages
(`--system-site-packages`) and reuse their virtualenvs: install torch once into the base
Python (README's set-up command does), and each session adds only what it lacks.
"""

from __future__ import annotations

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

# The CPU machines install these from local disk; the cap is the machine's, not ours.
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
SHARED = {"venv_params": ["--system-site-packages"]}


def _install(session: nox.Session) -> None:
    session.install(*TORCH, "-e", ".[test]")


@nox.session(**SHARED)
def tests(session: nox.Session) -> None:
    """The unit tests (CPU, a few minutes); TensorRT/GPU tests skip with their reason."""
    _install(session)
    session.run("python", "-m", "pytest", "-m", "not benchmark", "-p", "no:cacheprovider", *session.posargs)


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
