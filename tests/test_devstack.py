"""Tests of medportal.devstack against real embedded PostgreSQL and Redis.

No Django here: devstack runs before Django is configured. Every test gets its own short
MEDPORTAL_VAR_DIR under /tmp (unix socket paths are limited to ~100 characters) and runs devstack
in a subprocess without DATABASE_URL/REDIS_URL, so the embedded fallback is what is exercised.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from medportal import devstack

ROOT = Path(__file__).resolve().parent.parent

CHECK_SERVICES = textwrap.dedent(
    """
    import os, psycopg, redis
    with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=5).ping()
    print("DATABASE_URL=" + os.environ["DATABASE_URL"])
    print("REDIS_URL=" + os.environ["REDIS_URL"])
    """
)


@pytest.fixture
def var_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="mp", dir="/tmp")
    yield path
    for pid, _ in service_processes(path):  # only reached when a test failed half-way
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


def clean_env(var: str) -> dict[str, str]:
    """The environment of a devstack subprocess: no service URLs, our own var dir."""
    drop = {"DATABASE_URL", "REDIS_URL", "XDG_RUNTIME_DIR"}
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env["MEDPORTAL_VAR_DIR"] = var
    return env


def devstack_cmd(*args: str, python_options: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *python_options, "-m", "medportal.devstack", *args]


def run_devstack(
    var: str, *args: str, timeout: float = 60, python_options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        devstack_cmd(*args, python_options=python_options),
        cwd=ROOT,
        env=clean_env(var),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def service_processes(var: str) -> list[tuple[int, str]]:
    """postgres / redis-server processes whose command line mentions ``var``."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines()[1:]:
        pid, _, args = line.strip().partition(" ")
        if var in args and ("postgres" in args or "redis-server" in args):
            found.append((int(pid), args))
    return found


def assert_nothing_left(var: str) -> None:
    deadline = time.monotonic() + 5
    while service_processes(var) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service_processes(var) == []
    assert not (Path(var) / "pgdata" / "postmaster.pid").exists()
    assert not (Path(var) / "redis.sock").exists()


def read_line(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output from the child in time"
    return proc.stdout.readline().strip()


# --------------------------------------------------------------------------------------------
# exec against embedded services
# --------------------------------------------------------------------------------------------


def test_exec_provides_embedded_postgres_and_redis(var_dir: str) -> None:
    result = run_devstack(var_dir, "exec", "--", sys.executable, "-c", CHECK_SERVICES)

    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert lines["DATABASE_URL"].startswith("postgresql://postgres@%2Ftmp%2F")
    assert lines["DATABASE_URL"].endswith("/medportal")
    assert lines["REDIS_URL"] == f"unix://{var_dir}/redis.sock"
    info = [line for line in result.stderr.splitlines() if "PostgreSQL (embedded)" in line]
    assert len(info) == 1 and "Redis (embedded)" in info[0]
    assert_nothing_left(var_dir)


@pytest.mark.parametrize(
    ("code", "expected"),
    [("raise SystemExit(3)", 3), ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", 143)],
)
def test_exec_propagates_exit_code(var_dir: str, code: str, expected: int) -> None:
    result = run_devstack(var_dir, "exec", "--", sys.executable, "-c", code)

    assert result.returncode == expected, result.stderr
    assert_nothing_left(var_dir)


def test_exec_reuses_data_between_runs(var_dir: str) -> None:
    create = (
        "import os, psycopg\n"
        "with psycopg.connect(os.environ['DATABASE_URL']) as c:\n"
        "    c.execute('create table kept (v text)')\n"
        "    c.execute(\"insert into kept values ('still here')\")\n"
    )
    read = (
        "import os, psycopg\n"
        "with psycopg.connect(os.environ['DATABASE_URL']) as c:\n"
        "    print(c.execute('select v from kept').fetchone()[0])\n"
    )
    first = run_devstack(var_dir, "exec", "--", sys.executable, "-c", create)
    assert first.returncode == 0, first.stderr
    assert_nothing_left(var_dir)

    second = run_devstack(var_dir, "exec", "--", sys.executable, "-c", read)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "still here"
    assert_nothing_left(var_dir)


@pytest.mark.parametrize("services_killed_too", [False, True], ids=["orphaned", "crashed"])
def test_exec_recovers_after_a_crashed_run(var_dir: str, services_killed_too: bool) -> None:
    """devstack SIGKILLed: its services are either orphaned (still running) or, when the whole
    machine went down, dead with stale pid files, sockets and handle lists. Both must start."""
    proc = subprocess.Popen(
        devstack_cmd(
            "exec", "--", sys.executable, "-c",
            "import os, time; print(os.getpid(), flush=True); time.sleep(60)",
        ),
        cwd=ROOT, env=clean_env(var_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    child = int(read_line(proc))
    proc.kill()
    proc.wait()
    os.kill(child, signal.SIGKILL)
    assert service_processes(var_dir), "the services should have outlived the killed devstack"
    if services_killed_too:
        for pid, _ in service_processes(var_dir):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)

    result = run_devstack(var_dir, "exec", "--", sys.executable, "-c", CHECK_SERVICES)

    assert result.returncode == 0, result.stderr
    assert_nothing_left(var_dir)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_exec_forwards_signals_and_stops_services(var_dir: str, signum: int) -> None:
    proc = subprocess.Popen(
        devstack_cmd(
            "exec", "--", sys.executable, "-c",
            "import time; print('ready', flush=True); time.sleep(60)",
        ),
        cwd=ROOT, env=clean_env(var_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert read_line(proc) == "ready"
    proc.send_signal(signum)

    assert proc.wait(timeout=20) == 128 + signum
    assert_nothing_left(var_dir)


def test_signal_during_startup_leaves_nothing_behind(var_dir: str) -> None:
    """A Ctrl-C while initdb/pg_ctl run must not orphan a half-started postmaster."""
    proc = subprocess.Popen(
        devstack_cmd("exec", "--", "sleep", "30"),
        cwd=ROOT, env=clean_env(var_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(0.7)  # initdb is running by now
    proc.send_signal(signal.SIGINT)

    assert proc.wait(timeout=30) == 128 + signal.SIGINT
    assert_nothing_left(var_dir)


def test_env_prints_urls_and_stops_services(var_dir: str) -> None:
    # -W error: pgserver's import warns when XDG_RUNTIME_DIR is unset (clean_env drops it)
    result = run_devstack(var_dir, "env", python_options=("-W", "error"))

    assert result.returncode == 0, result.stderr
    assert f"REDIS_URL=unix://{var_dir}/redis.sock" in result.stdout.splitlines()
    assert "DATABASE_URL=postgresql://postgres@%2Ftmp%2F" in result.stdout
    assert_nothing_left(var_dir)


def test_var_dir_too_deep_for_sockets_still_works(var_dir: str) -> None:
    """Socket paths are limited to ~100 characters; a deep checkout falls back to /tmp."""
    deep = Path(var_dir) / ("d" * 90)
    deep.mkdir()
    try:
        result = run_devstack(str(deep), "exec", "--", sys.executable, "-c", CHECK_SERVICES)

        assert result.returncode == 0, result.stderr
        assert "/tmp/medportal-" in result.stdout
        assert_nothing_left(str(deep))
    finally:
        shutil.rmtree(devstack.runtime_dir(deep), ignore_errors=True)


def test_urls_from_the_environment_are_used_as_they_are(var_dir: str) -> None:
    env = clean_env(var_dir)
    env["DATABASE_URL"] = "postgresql://app:s3cret@db.invalid:5432/medportal"
    env["REDIS_URL"] = "redis://:hunter2@cache.invalid:6379/1"
    script = "import os; print(os.environ['REDIS_URL'])"
    result = subprocess.run(
        devstack_cmd("exec", "--", sys.executable, "-c", script),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "redis://:hunter2@cache.invalid:6379/1"
    assert "s3cret" not in result.stderr and "hunter2" not in result.stderr
    assert "(env)" in result.stderr
    assert list(Path(var_dir).iterdir()) == []  # nothing embedded was even prepared


def test_prefer_local_uses_the_server_on_127_0_0_1(var_dir: str) -> None:
    if not devstack.tcp_open(("127.0.0.1", 5432)):
        pytest.skip("nothing listens on 127.0.0.1:5432, so there is no local PostgreSQL to prefer")
    script = "import os; print(os.environ['DATABASE_URL']); print(os.environ['REDIS_URL'])"
    result = run_devstack(var_dir, "exec", "--prefer-local", "--", sys.executable, "-c", script)

    assert result.returncode == 0, result.stderr
    database_url, redis_url = result.stdout.split()
    assert database_url == "postgresql://postgres@127.0.0.1:5432/medportal"
    if devstack.redis_ping(("127.0.0.1", 6379)):
        assert redis_url == "redis://127.0.0.1:6379/0"
    else:
        assert redis_url == f"unix://{var_dir}/redis.sock"
    assert not (Path(var_dir) / "pgdata").exists()
    assert_nothing_left(var_dir)


# --------------------------------------------------------------------------------------------
# the supervisor behind `run`, with dummy children
# --------------------------------------------------------------------------------------------

# Durations carry this run's pid, so that only our own dummies are counted (a
# developer's `sleep 60` elsewhere on the machine must not fail the test).
MARK = f"{os.getpid()}"
SUPERVISE = textwrap.dedent(
    f"""
    import sys
    from medportal.devstack import supervise
    py = sys.executable
    sys.exit(supervise({{
        "sleeper": ["sleep", "61.{MARK}"],
        "stubborn": [py, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                               "print('ready', flush=True); time.sleep(62.{MARK})"],
        "with grandchild": ["sh", "-c", "sleep 63.{MARK} & sleep 64.{MARK}"],
        "mortal": [py, "-c", "import sys, time; time.sleep(float(sys.argv[1]))", sys.argv[1]],
    }}, grace=1.0))
    """
)


def dummy_processes() -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "sleep" in line and f".{MARK}" in line]


def start_supervisor(mortal_seconds: float) -> subprocess.Popen[str]:
    assert dummy_processes() == [], "leftovers of an earlier run would confuse this test"
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISE, str(mortal_seconds)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert read_line(proc) == "ready"
    return proc


def test_supervisor_stops_every_child_on_sigterm() -> None:
    proc = start_supervisor(mortal_seconds=60)
    assert len(dummy_processes()) >= 4

    proc.send_signal(signal.SIGTERM)

    assert proc.wait(timeout=15) == 0
    assert dummy_processes() == []


def test_supervisor_stops_everything_when_a_child_dies() -> None:
    proc = start_supervisor(mortal_seconds=1)

    assert proc.wait(timeout=15) == 1
    assert "mortal exited unexpectedly" in proc.stderr.read()
    assert dummy_processes() == []


def test_dev_commands_of_run() -> None:
    commands = devstack.dev_commands(Path("/v"), "127.0.0.1", 8123)

    assert commands["uvicorn"][1:] == [
        "-m", "uvicorn", "medportal.asgi:application",
        "--host", "127.0.0.1", "--port", "8123", "--lifespan", "off",
    ]  # fmt: skip
    assert commands["celery worker"][1:] == [
        "-m", "celery", "-A", "medportal", "worker", "--loglevel", "INFO", "--concurrency", "2",
    ]  # fmt: skip
    assert commands["celery beat"][-2:] == ["--schedule", "/v/celerybeat-schedule"]


# --------------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:s3cret@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://app@db/x?password=pw&sslmode=require", "postgresql://app@db/x?password=***&sslmode=require"),
        ("unix:///tmp/mp1/redis.sock", "unix:///tmp/mp1/redis.sock"),
        ("postgresql://postgres@%2Ftmp%2Fx:5432/medportal", "postgresql://postgres@%2Ftmp%2Fx:5432/medportal"),
    ],
)  # fmt: skip
def test_mask_url(url: str, masked: str) -> None:
    assert devstack.mask_url(url) == masked


def test_pg_socket_url_is_understood_by_libpq_and_dj_database_url() -> None:
    psycopg = pytest.importorskip("psycopg")
    url = devstack.pg_socket_url("/tmp/mp1/pgdata", 5432)

    info = psycopg.conninfo.conninfo_to_dict(url)
    assert (info["host"], info["port"], info["dbname"]) == ("/tmp/mp1/pgdata", "5432", "medportal")
    dj_database_url = pytest.importorskip("dj_database_url")
    assert dj_database_url.parse(url)["HOST"] == "/tmp/mp1/pgdata"


def test_repair_pgdata_drops_dead_handles_and_stale_pid_file(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "PG_VERSION").write_text("16\n")
    (tmp_path / ".handle_pids.json").write_text(f"[{os.getpid()}, {dead.pid}]")
    (tmp_path / "postmaster.pid").write_text(f"{dead.pid}\n/x\n")

    devstack.repair_pgdata(tmp_path)

    assert (tmp_path / ".handle_pids.json").read_text() == f"[{os.getpid()}]"
    assert not (tmp_path / "postmaster.pid").exists()


def test_repair_pgdata_ignores_a_reused_pid(tmp_path: Path) -> None:
    """After a crash the postmaster's pid may belong to another program by now."""
    (tmp_path / "PG_VERSION").write_text("16\n")
    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n1\n5432\n\n\n\nready\n")

    devstack.repair_pgdata(tmp_path)

    assert not (tmp_path / "postmaster.pid").exists()


def test_repair_pgdata_moves_an_unfinished_initdb_aside(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    (pgdata / "base").mkdir(parents=True)

    devstack.repair_pgdata(pgdata)

    assert pgdata.is_dir() and list(pgdata.iterdir()) == []
    assert [p.name.startswith("pgdata.broken-") for p in tmp_path.iterdir()].count(True) == 1


def test_too_long_socket_path_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(devstack.DevstackError, match="MEDPORTAL_VAR_DIR"):
        devstack.EmbeddedRedis(tmp_path, tmp_path / ("x" * 120) / "redis.sock").acquire()


def test_tcp_open() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert devstack.tcp_open(sock.getsockname())
