"""Checks: `nox` runs the unit tests on every supported Python installed here and the
integration tests on the oldest of them; the integration tests on the others, lint,
typecheck, docs, floors, newest and bench on demand.

A supported Python that is not installed is left out; none installed at all is an error,
never a run that passes by testing nothing."""

import glob
import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True  # a session with no interpreter fails
SUPPORTED = ("3.11", "3.12", "3.13")
PYPROJECT = nox.project.load_toml("pyproject.toml")
TOOLS = "3.11"  # lint, typecheck, docs and bench: one Python is enough


def _interpreter(version: str) -> str | None:
    """`pythonX.Y` on PATH when it runs (a pyenv shim for a version that is not selected
    does not), else pyenv's copy of it."""
    candidates = [shutil.which(f"python{version}")]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True)
    for path in filter(None, candidates):
        if subprocess.run([path, "-c", ""], capture_output=True).returncode == 0:
            return path
    return None


def _installed() -> list[str]:
    """Every supported Python installed here, put first on PATH where nox looks for it;
    with none, the oldest's name, which nox then fails to find."""
    found = {v: path for v in SUPPORTED if (path := _interpreter(v))}
    for path in found.values():
        os.environ["PATH"] = os.pathsep.join([str(Path(path).parent), os.environ["PATH"]])
    return list(found) or [SUPPORTED[0]]


PYTHONS = _installed()
# the integration suite (three server lines, a cluster, chaos and the system checker) once,
# on the oldest Python: the floor; `nox -s integration-3.13` runs it on another
nox.options.sessions = ["unit", f"integration-{PYTHONS[0]}"]


def _groups(*names: str) -> tuple[str, ...]:
    return nox.project.dependency_groups(PYPROJECT, *names)


@nox.session(python=PYTHONS)
def unit(session: nox.Session) -> None:
    """Against the built wheel, as a packager would test it: not the checkout's src/."""
    session.install(".[all]", *_groups("test"))
    session.run("pytest", "unit_tests", *session.posargs)


@nox.session(python=PYTHONS)
def integration(session: nox.Session) -> None:
    session.install("-e", ".[all]", *_groups("test"))
    session.run("pytest", "integration_tests", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=TOOLS)
def lint(session: nox.Session) -> None:
    session.install(*_groups("lint"))
    session.run(
        "ruff", "check", "src", "plugins", "unit_tests", "integration_tests", "bench", "docs", "noxfile.py"
    )
    session.run(  # the layout is ruff's too: `ruff format` before committing
        "ruff",
        "format",
        "--check",
        "src",
        "plugins",
        "unit_tests",
        "integration_tests",
        "bench",
        "docs",
        "noxfile.py",
    )


@nox.session(python=TOOLS)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[all]", *_groups("test", "typecheck"))
    session.run("mypy")


@nox.session(python=TOOLS)
def docs(session: nox.Session) -> None:
    session.install("-e", ".", *_groups("docs"))
    session.run("mkdocs", "build", "--strict", "-d", "site")


def _resolved(session: nox.Session, resolution: str) -> Path:
    """Constraints pinning relaybus's dependencies, every extra's included, at the lowest
    versions pyproject allows (`lowest-direct`) or the newest (`highest`)."""
    session.install("uv")
    pins = Path(session.create_tmp()) / f"{resolution}.txt"
    session.run(
        "uv",
        "pip",
        "compile",
        "pyproject.toml",
        "--extra",
        "all",
        "--resolution",
        resolution,
        "--python-version",
        str(session.python),
        "-q",
        "-o",
        str(pins),
    )
    return pins


def _installed_check(session: nox.Session, pins: Path) -> None:
    """The wheel with those pins, its unit tests and the quickstart on a real Redis."""
    session.install("-c", str(pins), ".[all]")
    session.install("-c", str(pins), *_groups("test-base"))  # test tools that keep the floors
    session.run("pip", "check")
    session.run("relaybus", "--version")
    session.run(
        "pytest",
        "unit_tests",
        "integration_tests/test_quickstart.py",
        "-p",
        "no:cacheprovider",
        *session.posargs,
    )


@nox.session(python=SUPPORTED[0])
def floors(session: nox.Session) -> None:
    """Every dependency at the lowest version pyproject allows, on the oldest Python."""
    _installed_check(session, _resolved(session, "lowest-direct"))


@nox.session(python=SUPPORTED[-1])
def newest(session: nox.Session) -> None:
    """Every dependency at its newest release, on the newest Python."""
    _installed_check(session, _resolved(session, "highest"))


@nox.session(python=TOOLS)
def bench(session: nox.Session) -> None:
    """Throughput against raw redis-py in the same run, then docs/benchmarks.md's targets; not a test."""
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
    session.install("-e", ".[mcp,a2a]", "a2a-sdk[sqlite]>=1.3,<2")  # the SQL stream to compare with
    session.run("python", "bench/bench_protocol.py")
    session.run("python", "bench/bench_targets.py", str(results))  # last: the targets table
