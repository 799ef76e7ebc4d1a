"""Settings for the test suite: the real settings, with the few environment
values a test run must own (its own queue, channel prefix and secret), so a
developer's running stack never steals test tasks (STACK-NOTES trap 5).

Values go into os.environ so the ASGI server and Celery worker that live
tests start as child processes get the same ones.
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault("CELERY_QUEUE", f"pytest-{os.getpid()}")
os.environ.setdefault("CHANNEL_LAYER_PREFIX", f"pytest-{os.getpid()}")
os.environ.setdefault("MEDPORTAL_MASTER_KEY", "dGVzdC1vbmx5LW1hc3Rlci1rZXktMzItYnl0ZXMhISE=")
os.environ.setdefault("DEMO_PASSWORD", "correct-horse-battery-9")
# Each run's ciphertext store, beside its own database (children inherit it).
os.environ.setdefault(
    "MEDPORTAL_BLOB_ROOT",
    os.path.join(tempfile.gettempdir(), f"medportal-test-blobs-{os.getpid()}"),
)

from medportal.settings import *  # noqa: F403

# Each run gets its own test database, so two runs on one machine (a developer
# and CI, or two terminals) never drop each other's.
DATABASES["default"]["TEST"] = {"NAME": f"test_medportal_{os.getpid()}"}  # noqa: F405

# Cheap Argon2 for patients' signing keys: hundreds of patients sign in tests.
MEDPORTAL_PATIENT_KEY_ARGON2 = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}
