"""Checks: `nox` runs unit and integration tests; lint, typecheck, docs and bench on demand."""

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["unit", "integration"]
nox.options.reuse_existing_virtualenvs = True
PYTHON = "3.11"


@nox.session(python=PYTHON)
def unit(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("pytest", "unit_tests", *session.posargs)


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("pytest", "integration_tests", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.17,<0.18")  # pinned: a new release can add findings, not our regressions
    session.run("ruff", "check", "src", "plugins", "unit_tests", "integration_tests", "bench", "docs",
                "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    session.install("-e", ".", "mkdocs-material", "mkdocstrings[python]")
    session.run("mkdocs", "build", "--strict", "-d", "site")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Throughput against raw redis-py in the same run, then DESIGN §8's targets; never part of the tests."""
    session.install("-e", ".[embedded]")
    results = Path(session.create_tmp()) / "bench-results"  # kept: bench_targets.py --markdown
    shutil.rmtree(results, ignore_errors=True)  # never judge an earlier run's figures
    results.mkdir()
    session.run("python", "bench/bench_core.py", "--results", str(results / "core.json"), *session.posargs)
    session.run("python", "bench/bench_engine.py", "--results", str(results / "engine.json"))
    session.run("python", "bench/bench_cluster.py")
    session.run("python", "bench/bench_policies.py")
    session.run("python", "bench/bench_streams.py")
    # the consume target (docs/benchmarks.md) is relative to FastStream: installed here only
    session.install("faststream[redis]>=0.7.8,<0.8")
    session.run("python", "bench/bench_faststream.py")
    # every Python Redis queue in one run (docs/benchmarks.md): the peers are installed here
    # only. Plain `saq`, not saq[redis]: that extra pins redis-py < 8 for the whole session
    session.install("taskiq-redis>=1.2.4,<2", "streaq>=7.2,<8", "saq>=0.26.4,<0.27")
    session.run("python", "bench/bench_peers.py", "--results", str(results / "peers.json"))
    session.install("-e", ".[metrics]")
    session.run("python", "bench/bench_metrics.py")
    session.run("python", "bench/bench_targets.py", str(results))  # last: the targets table
