"""MedPortal settings.

Everything that differs between a laptop and a hospital's servers is read from
the environment through the small typed helpers in ``medportal.env``; each
variable is listed, with its default, in the README ("Configuration").
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url

from medportal.env import env_bool, env_int, env_list, env_str, redis_url_for_kombu

BASE_DIR = Path(__file__).resolve().parent.parent

# --- Core -------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)
# A development key is only acceptable when DEBUG is on; production must set one.
SECRET_KEY = env_str("SECRET_KEY", "dev-only-insecure-key-change-me" if DEBUG else "")
if not SECRET_KEY:
    raise RuntimeError("SECRET_KEY must be set when DEBUG is off (see README, Configuration).")

# Root of every key the portal derives (signing-key encryption now, record
# key-encryption keys later): 32 random bytes, base64. Losing it loses the data.
MEDPORTAL_MASTER_KEY = env_str(
    "MEDPORTAL_MASTER_KEY", "ZGV2LW9ubHktbWFzdGVyLWtleS1kby1ub3QtdXNlISE=" if DEBUG else ""
)
if not MEDPORTAL_MASTER_KEY:
    raise RuntimeError("MEDPORTAL_MASTER_KEY must be set when DEBUG is off (see README).")

# Hub on BASE_DOMAIN, every tenant on <slug>.<BASE_DOMAIN>.
BASE_DOMAIN = env_str("BASE_DOMAIN", "localhost").lower()
ALLOWED_HOSTS = [BASE_DOMAIN, f".{BASE_DOMAIN}", *env_list("EXTRA_ALLOWED_HOSTS", [])]
# Scheme and port used when the portal prints or builds absolute links.
SITE_SCHEME = env_str("SITE_SCHEME", "http")
SITE_PORT = env_int("PORT", 8000)
PUBLIC_PORT = env_int("PUBLIC_PORT", SITE_PORT)

# --- Applications (django-tenants: shared = public schema, tenant = per schema) ----

SHARED_APPS = [
    "django_tenants",
    "medportal.tenants",
    "medportal.exchange",
    "medportal.research",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.admin",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "axes",
    "accounts",
    "chain",
]
# The hub has its own operators, sessions and tokens in the public schema; each
# tenant has its own in its schema, so nothing about a login crosses tenants.
TENANT_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "rest_framework.authtoken",
    "axes",
    "accounts",
    "chain",
    "records",
    "consent",
]
INSTALLED_APPS = list(SHARED_APPS) + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
ROOT_URLCONF = "medportal.urls_tenant"
PUBLIC_SCHEMA_URLCONF = "medportal.urls_public"
# An unknown host is a 404 page, never the hub.
SHOW_PUBLIC_IF_NO_TENANT_FOUND = False

MIDDLEWARE = [
    "django_tenants.middleware.main.TenantMainMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.TenantBoundSessionMiddleware",
    "accounts.middleware.PasswordChangeRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.portal",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "medportal.asgi.application"

# --- Database -----------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/medportal")
DATABASES = {
    "default": {
        **dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0)),
        "ENGINE": "django_tenants.postgresql_backend",
    }
}
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, Channels, Celery --------------------------------------------------

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 defaults socket_timeout to 5 s, which kills idle websocket
            # consumers; None keeps them open (STACK-NOTES trap 1).
            "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
            "prefix": env_str("CHANNEL_LAYER_PREFIX", "medportal"),
        },
    }
}

CELERY_BROKER_URL = redis_url_for_kombu(env_str("CELERY_BROKER_URL", REDIS_URL))
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "medportal")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Seconds a worker process keeps its database connection between tasks.
CELERY_DATABASE_CONN_MAX_AGE = env_int("CELERY_DATABASE_CONN_MAX_AGE", 300)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Must exceed the longest task and ETA, or Redis re-delivers a running task.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
# tenant-schemas-celery: cache the Tenant row a task runs for (one query less per task).
CELERY_TASK_TENANT_CACHE_SECONDS = env_int("CELERY_TENANT_CACHE_SECONDS", 30)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE = {
    "sessions-clear-expired": {
        "task": "accounts.tasks.sessions_clear_expired",
        "schedule": timedelta(hours=1),
    },
    "chain-seal-due": {
        "task": "chain.tasks.block_seal_task",
        "schedule": timedelta(seconds=5),
    },
    "chain-outbox-sweep": {
        "task": "chain.tasks.outbox_sweep_task",
        "schedule": timedelta(seconds=env_int("CHAIN_SWEEP_SECONDS", 10)),
    },
    "chain-verify": {
        "task": "chain.tasks.chain_verify_task",
        "schedule": timedelta(seconds=env_int("CHAIN_VERIFY_INTERVAL_SECONDS", 300)),
    },
    "consent-access-log-anchor": {
        "task": "consent.tasks.access_log_anchor_task",
        "schedule": timedelta(seconds=env_int("ACCESS_LOG_ANCHOR_SECONDS", 60)),
    },
    "consent-grantee-keys-expire": {
        "task": "consent.tasks.grantee_wraps_expire_task",
        "schedule": timedelta(seconds=env_int("GRANTEE_KEYS_EXPIRE_SECONDS", 300)),
    },
    "worker-heartbeat": {
        "task": "medportal.tasks.heartbeat",
        "schedule": timedelta(seconds=30),
    },
}

# --- Ledger ------------------------------------------------------------------------

# A block is sealed when this many transactions wait, or when the oldest has
# waited CHAIN_MAX_BLOCK_WAIT_MS.
CHAIN_MAX_TRANSACTIONS_PER_BLOCK = env_int("CHAIN_MAX_TRANSACTIONS_PER_BLOCK", 100)
CHAIN_MAX_BLOCK_WAIT_MS = env_int("CHAIN_MAX_BLOCK_WAIT_MS", 200)
# An outbox row not confirmed this long after it was sent is sent again.
CHAIN_REDELIVERY_SECONDS = env_int("CHAIN_REDELIVERY_SECONDS", 30)

# --- Records (encryption at rest) ----------------------------------------------------

# Key-encryption keys come from a key provider; the default derives them from
# MEDPORTAL_MASTER_KEY. Rotation: raise the version, re-wrap, then retire the old one.
MEDPORTAL_KEY_PROVIDER = env_str("MEDPORTAL_KEY_PROVIDER", "records.crypto.MasterKeyProvider")
MEDPORTAL_KEK_VERSION = env_int("MEDPORTAL_KEK_VERSION", 1)
MEDPORTAL_KEK_RETIRED_VERSIONS = [
    int(version) for version in env_list("MEDPORTAL_KEK_RETIRED_VERSIONS", [])
]
# Content-addressed ciphertext store (files named by their SHA-256).
MEDPORTAL_BLOB_ROOT = env_str("MEDPORTAL_BLOB_ROOT", str(BASE_DIR / "var" / "blobs"))
# Largest attachment (PDF, PNG, JPEG) a doctor can add to a record.
MEDPORTAL_ATTACHMENT_MAX_BYTES = env_int("MEDPORTAL_ATTACHMENT_MAX_BYTES", 10 * 1024 * 1024)
MEDPORTAL_RESEARCH_DOCUMENT_MAX_BYTES = env_int(
    "MEDPORTAL_RESEARCH_DOCUMENT_MAX_BYTES", 10 * 1024 * 1024
)
# After this long a release still marked "being prepared" (a lost task) may be started again.
MEDPORTAL_RESEARCH_RELEASE_MINUTES = env_int("MEDPORTAL_RESEARCH_RELEASE_MINUTES", 60)
# How long a patient's account-linking code stays valid.
MEDPORTAL_LINK_CODE_SECONDS = env_int("MEDPORTAL_LINK_CODE_SECONDS", 600)
# Argon2id cost of the key that seals a patient's signing key under their password.
MEDPORTAL_PATIENT_KEY_ARGON2 = {
    "time_cost": env_int("PATIENT_KEY_ARGON2_TIME_COST", 3),
    "memory_cost": env_int("PATIENT_KEY_ARGON2_MEMORY_KIB", 65536),
    "parallelism": 1,
}
# Emergency (break-glass) access: how long it lasts and which sensitivity
# levels it opens (normal, restricted, very_restricted).
MEDPORTAL_EMERGENCY_HOURS = env_int("MEDPORTAL_EMERGENCY_HOURS", 24)
MEDPORTAL_EMERGENCY_LEVELS = env_list("MEDPORTAL_EMERGENCY_LEVELS", ["normal", "restricted"])

# --- Authentication -------------------------------------------------------------

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:login"

# Lockout: one username from one address. Locking by address alone would let one
# person lock out a whole hospital behind its NAT or proxy (django-axes #23).
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "accounts.security.client_ip"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# How many reverse proxies in front of the app append to X-Forwarded-For. 0 means
# the app is reached directly and X-Forwarded-For is ignored (it can be forged).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
if TRUSTED_PROXY_COUNT:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Sessions, cookies, security headers ---------------------------------------

# Host-only cookies (no SESSION_COOKIE_DOMAIN): a browser never sends alpha's
# cookie to beta; sessions live in each tenant's own schema, and the session is
# bound to its tenant (accounts.middleware.TenantBoundSessionMiddleware).
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 60 * 60)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG and SITE_SCHEME == "https")
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
CSRF_FAILURE_VIEW = "medportal.errors.csrf_failure"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)

# --- Internationalisation, static ---------------------------------------------

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
# Production: set STATIC_ROOT and run `manage.py collectstatic`; unset, files are
# served straight from the app folders (WHITENOISE_USE_FINDERS).
STATIC_ROOT = env_str("STATIC_ROOT", "") or None
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve static files from the app directories without collectstatic in development.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- REST API -------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so that an anonymous call gets 401 with WWW-Authenticate.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "EXCEPTION_HANDLER": "medportal.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MedPortal API",
    "DESCRIPTION": "Patient-controlled sharing of medical records between hospitals.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Mail -------------------------------------------------------------------------

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "MedPortal <no-reply@medportal.invalid>")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
# Only for EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend.
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(BASE_DIR / "var" / "mail"))

# --- Demo -------------------------------------------------------------------------

DEMO_PASSWORD = env_str("DEMO_PASSWORD", "medportal-demo")

# --- Logging: never request bodies, never PHI --------------------------------------

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # axes logs usernames and addresses at INFO; keep it to warnings.
        "axes": {"level": "WARNING"},
    },
}
