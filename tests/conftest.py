"""Shared test set-up.

The hub, the demo tenants (alpha, beta, northwind) and the demo users are
created once per session through the real services (``demo_seed``) and
committed, so that ordinary tests roll back on top of them and live tests
(a real ASGI server, a real Celery worker) can see them from other processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from accounts.demo import demo_seed
from accounts.models import User
from medportal.tenants.models import Tenant

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PASSWORD = os.environ["DEMO_PASSWORD"]


@pytest.fixture(scope="session")
def django_db_setup(request, django_test_environment, django_db_blocker, django_db_keepdb):
    """pytest-django's set-up, except that the test database is always made:
    pytest-django skips it when no collected test has the ``django_db`` mark,
    and live tests (which commit) would then write to the development database."""
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        database_config = setup_databases(
            verbosity=request.config.option.verbose,
            interactive=False,
            aliases={"default"},
            keepdb=django_db_keepdb,
        )
        assert connection.settings_dict["NAME"].startswith("test_")
        demo_seed(password=PASSWORD)
        connection.set_schema_to_public()
    yield
    if not django_db_keepdb:
        with django_db_blocker.unblock():
            teardown_databases(database_config, verbosity=request.config.option.verbose)


def _tenant(slug: str) -> Tenant:
    with schema_context(get_public_schema_name()):
        return Tenant.objects.get(slug=slug)


@pytest.fixture(scope="session")
def committed(django_db_setup, django_db_blocker) -> Iterator[dict[str, Tenant]]:
    """For live tests: database access outside any test transaction, so what the
    test writes is committed and visible to the server and worker processes.
    Such tests must clean up after themselves. Yields the tenants by slug."""
    with django_db_blocker.unblock():
        tenants = {tenant.slug: tenant for tenant in Tenant.objects.all()}
    yield tenants


@pytest.fixture
def hub(db) -> Tenant:
    return _tenant("hub")


@pytest.fixture
def alpha(db) -> Tenant:
    return _tenant("alpha")


@pytest.fixture
def beta(db) -> Tenant:
    return _tenant("beta")


@pytest.fixture
def northwind(db) -> Tenant:
    return _tenant("northwind")


@pytest.fixture
def southbank(db) -> Tenant:
    return _tenant("southbank")


@pytest.fixture(autouse=True)
def _reset_schema_after_test():
    """A test that leaves the connection in a tenant schema must not leak it."""
    yield
    connection.set_schema_to_public()  # only resets attributes; no query


def host_of(tenant: Tenant) -> str:
    return tenant.domain_name


def client_for(tenant: Tenant, **extra) -> Client:
    """A Django test client that talks to ``tenant``'s host."""
    return Client(HTTP_HOST=host_of(tenant), **extra)


def user_at(tenant: Tenant, username: str) -> User:
    with tenant_context(tenant):
        return User.objects.get(username=username)


def login_client(tenant: Tenant, username: str, password: str = PASSWORD) -> Client:
    """Sign in through the real login page, as a browser would."""
    client = client_for(tenant, enforce_csrf_checks=False)
    response = client.post("/accounts/login/", {"username": username, "password": password})
    assert response.status_code == 302, f"login of {username} at {tenant.slug} failed"
    return client


# --- Live processes: a real ASGI server and a real Celery worker ----------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a server or worker that uses the test database."""
    environment = dict(os.environ)
    database_url = environment.get("DATABASE_URL", settings.DATABASE_URL)
    parts = urlsplit(database_url)
    test_database = connection.settings_dict["NAME"]
    environment["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{test_database}"))
    environment["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    environment["PYTHONUNBUFFERED"] = "1"
    environment.pop("PYTHONWARNINGS", None)
    environment.update(extra or {})
    return environment


def wait_for(condition, *, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class LiveServer:
    port: int
    process: subprocess.Popen

    def url(self, tenant: Tenant, path: str = "/") -> str:
        return f"http://{tenant.domain_name}:{self.port}{path}"


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            if os.getpgid(process.pid) == process.pid:
                os.killpg(process.pid, signal.SIGTERM)  # a worker's pool children too
            else:
                process.terminate()
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="session")
def live_server_process(django_db_setup, tmp_path_factory) -> Iterator[LiveServer]:
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "uvicorn.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "medportal.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--lifespan",
                "off",
                "--log-level",
                "warning",
            ],
            cwd=PROJECT_ROOT,
            env=child_environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_for(ready, timeout=30, what="the ASGI server")
    yield LiveServer(port=port, process=process)
    _stop(process)


@dataclass
class LiveWorker:
    process: subprocess.Popen
    mail_dir: Path
    log: Path


def start_worker(
    mail_dir: Path,
    log: Path,
    *,
    beat_schedule: Path | None = None,
    extra_environment: dict[str, str] | None = None,
) -> subprocess.Popen:
    """A real prefork worker on the test queue, in its own process group (so a
    test can kill it whole), optionally with an embedded beat."""
    output = open(log, "ab")
    arguments = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "medportal",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        "2",
        "--pool",
        "prefork",
        "-Q",
        settings.CELERY_TASK_DEFAULT_QUEUE,
        "--hostname",
        f"pytest-{os.getpid()}-{time.monotonic_ns()}@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    if beat_schedule is not None:
        arguments += ["--beat", "--schedule", str(beat_schedule)]
    return subprocess.Popen(
        arguments,
        cwd=PROJECT_ROOT,
        env=child_environment(
            {
                "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
                "EMAIL_FILE_PATH": str(mail_dir),
                **(extra_environment or {}),
            }
        ),
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture(scope="session")
def live_worker(django_db_setup, tmp_path_factory) -> Iterator[LiveWorker]:
    from medportal.health import check_worker

    base = tmp_path_factory.mktemp("worker")
    mail_dir = base / "mail"
    mail_dir.mkdir()
    log = base / "worker.log"
    process = start_worker(mail_dir, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"worker exited: {log.read_text()[-3000:]}")
        return check_worker() == "ok"

    wait_for(ready, timeout=60, interval=0.5, what="the Celery worker")
    worker = LiveWorker(process=process, mail_dir=mail_dir, log=log)
    yield worker
    _stop(worker.process)  # a test may have replaced it (see test_delivery)
