"""Settings for the Social CRM, read from the environment.

With nothing configured the app runs on embedded defaults that suit one machine: a SQLite
file and a filesystem message broker under the data folder, and a secret key and an
encryption key generated there on first run. ``DJANGO_ENV=production`` selects the hardened
profile, which requires ``SECRET_KEY``, ``ALLOWED_HOSTS`` and ``SCRM_ENCRYPTION_KEYS``.
Every variable may also be given as a file path in ``<NAME>_FILE`` (Docker secrets).
"""

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import django_stubs_ext
import environ
from celery.schedules import crontab
from cryptography.fernet import Fernet
from csp.constants import NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

# Lets generic Django classes (ModelForm[Model], QuerySet[Model]) be subscripted at run time.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.FileAwareEnv()

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "production"}:
    raise ImproperlyConfigured("DJANGO_ENV must be 'development' or 'production'.")
PRODUCTION = DJANGO_ENV == "production"

DATA_DIR = Path(env.str("SCRM_DATA_DIR", default=str(BASE_DIR / "data")))
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _kept_secret(name: str, make: Callable[[], str]) -> str:
    """Read a generated secret from the data folder, creating it on first run."""
    path = DATA_DIR / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


if PRODUCTION:
    SECRET_KEY = env.str("SECRET_KEY")
    ENCRYPTION_KEYS = env.list("SCRM_ENCRYPTION_KEYS")
else:
    SECRET_KEY = env.str("SECRET_KEY", default="") or _kept_secret(
        "secret_key", get_random_secret_key
    )
    ENCRYPTION_KEYS = env.list("SCRM_ENCRYPTION_KEYS", default=[]) or [
        _kept_secret("encryption_key", lambda: Fernet.generate_key().decode())
    ]

DEBUG = False if PRODUCTION else env.bool("DEBUG", default=False)
ALLOWED_HOSTS = (
    env.list("ALLOWED_HOSTS")
    if PRODUCTION
    else env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "csp",
    "governance",
    "contacts",
    "channels_ingest",
    "conversations",
    "kpis",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "governance.security.PermissionsPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Entries recorded while a request is served know who made it and from where.
    "governance.audit.AuditContextMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    # After a user's own change, their inbox counts are counted afresh.
    "conversations.middleware.InboxCountsMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "governance.security.SessionLifetimeMiddleware",
    "governance.security.TwoFactorMiddleware",
    # Last, so it sees the login view's failures and answers with the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "scrm.urls"

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
                "governance.context_processors.roles",
                "conversations.context_processors.unread_notifications",
            ],
        },
    },
    # The long lists agents scroll all day (inbox rows, a conversation's thread) are rendered
    # by Jinja2, which compiles templates to Python: 5-10 times faster than Django's engine on
    # rows of many small values. Pages themselves stay Django templates.
    {
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "NAME": "jinja2",
        "DIRS": [BASE_DIR / "templates" / "jinja2"],
        "APP_DIRS": False,
        "OPTIONS": {"environment": "scrm.jinja2.environment"},
    },
]

WSGI_APPLICATION = "scrm.wsgi.application"

# --- Database ---------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'scrm.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the dashboard read while the worker writes; IMMEDIATE takes the write lock at
    # BEGIN so two writers queue up instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: broker and cache ------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
BROKER_DIR = DATA_DIR / "broker"

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or REDIS_URL or "filesystem://"
if CELERY_BROKER_URL == "filesystem://":
    # kombu's filesystem transport: a folder of message files, no server needed.
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        # Exchange tables; kombu would otherwise write them to ./control.
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # kombu sleeps this long whenever it finds no message it may take (also while the one
        # it holds runs); its 1 s default left the worker idle most of the time.
        "polling_interval": 0.1,
    }
# Separate queues so a slow poll never holds up webhook processing or replies; one worker may
# serve them all (make run), or each its own workers (see docker-compose.yml).
# Every queue a worker must serve (Procfile.dev and docker-compose.yml list these; a test
# keeps them in step).
SCRM_WORKER_QUEUES = ("default", "polling", "webhooks", "sends")
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "channels_ingest.tasks.poll_channel": {"queue": "polling"},
    "channels_ingest.tasks.process_webhook": {"queue": "webhooks"},
    "channels_ingest.tasks.send_message": {"queue": "sends"},
    "channels_ingest.tasks.send_messages": {"queue": "sends"},
}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    # Each channel keeps its own interval; this tick only looks for channels that are due.
    "poll-due-channels": {
        "task": "channels_ingest.tasks.poll_due_channels",
        "schedule": env.float("SCRM_POLL_TICK_SECONDS", default=5.0),
    },
    # SLA warnings and breaches fire within this many seconds of their due time.
    "check-slas": {
        "task": "conversations.tasks.check_slas",
        "schedule": env.float("SCRM_SLA_TICK_SECONDS", default=30.0),
    },
    # Conversations a rule wanted auto-assigned while nobody could take them are handed out
    # here once someone can (an agent coming online starts a hand-out at once).
    "assign-queued-conversations": {
        "task": "conversations.tasks.assign_queued_conversations",
        "schedule": env.float("SCRM_ASSIGN_TICK_SECONDS", default=30.0),
    },
    # Outbound webhook calls that failed are retried from here, so retries survive restarts.
    "retry-due-webhook-calls": {
        "task": "conversations.tasks.retry_due_webhook_calls",
        "schedule": 30.0,
    },
    # Replies waiting for approval past their deadline expire (the agent is told).
    "expire-approvals": {
        "task": "governance.tasks.expire_approvals",
        "schedule": 300.0,
    },
    # Retention runs nightly; it only touches what is older than each channel's policy.
    "apply-retention": {
        "task": "governance.tasks.apply_retention",
        "schedule": crontab(hour=3, minute=17),
    },
    "wake-snoozed-conversations": {
        "task": "conversations.tasks.wake_snoozed_conversations",
        "schedule": 60.0,
    },
    "resume-stalled-imports": {
        "task": "contacts.tasks.resume_stalled_imports",
        "schedule": 120.0,
    },
    "fail-stalled-sends": {
        "task": "channels_ingest.tasks.fail_stalled_sends",
        "schedule": 120.0,
    },
    "requeue-stale-webhooks": {
        "task": "channels_ingest.tasks.requeue_stale_webhooks",
        "schedule": 60.0,
    },
    # Reports lag changes by at most this much: facts of changed conversations are recomputed.
    "refresh-kpi-facts": {
        "task": "kpis.tasks.refresh_facts",
        "schedule": env.float("SCRM_KPI_TICK_SECONDS", default=60.0),
    },
    # Hourly, so a missed beat catches up; the task itself knows when the digest is due.
    "send-kpi-digest": {
        "task": "kpis.tasks.send_digest",
        "schedule": 3600.0,
    },
}

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    }

# --- Auth -------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "conversations:inbox"
LOGOUT_REDIRECT_URL = "login"
# django-axes goes first: it refuses a locked-out username+address before any password check.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Sessions are read from the cache (Redis, or files without it) and written through to the
# database: a page does not query the database for its session.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
# The longest a sign-in lasts.
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SCRM_SESSION_MAX_AGE = SESSION_COOKIE_AGE
SESSION_EXPIRE_AT_BROWSER_CLOSE = env.bool("SESSION_EXPIRE_AT_BROWSER_CLOSE", default=False)
# Sign out after this many seconds without a request (0: never). Every request then saves the
# session to push its expiry on; SessionLifetimeMiddleware still ends it SCRM_SESSION_MAX_AGE
# after sign-in.
SESSION_IDLE_TIMEOUT = env.int("SESSION_IDLE_TIMEOUT", default=0)
if SESSION_IDLE_TIMEOUT > 0:
    SESSION_SAVE_EVERY_REQUEST = True
    SESSION_COOKIE_AGE = min(SESSION_IDLE_TIMEOUT, SCRM_SESSION_MAX_AGE)

# Brute force: after this many wrong passwords (or second factors) for one username from one
# address, that pair is locked out until the cool-off has passed without another try.
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("SCRM_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("SCRM_LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "governance.security_views.locked_out"
# The audit log records sign-ins; axes keeps only the failure counts it needs.
AXES_DISABLE_ACCESS_LOG = True
# Two-factor (django-otp): the name authenticator apps show next to the code.
OTP_TOTP_ISSUER = env.str("SCRM_TOTP_ISSUER", default="Social CRM")
# The Django admin lists devices (to remove a lost phone's) but never shows their secrets.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# --- Internationalisation and time ------------------------------------------------------
LANGUAGE_CODE = "en-us"
# The organisation's time zone: pages and reports use it; the database stores UTC.
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Static files -----------------------------------------------------------------------
STATIC_URL = "static/"
# Production serves collected files; elsewhere files come from the app folders (see below).
STATIC_ROOT = BASE_DIR / "staticfiles" if PRODUCTION else DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# Outside production, serve straight from the app folders so no collectstatic step is needed.
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- REST framework ---------------------------------------------------------------------
# The API under /api/v1/ (scrm/api_urls.py): personal tokens for scripts, the session for the
# browser, the same access as the pages.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First, so an unauthenticated request is answered 401 with WWW-Authenticate.
        "governance.api_tokens.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "scrm.api.CursorPage",
    "DEFAULT_THROTTLE_CLASSES": ["scrm.api.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api": env.str("SCRM_API_RATE", default="600/minute")},
    "DEFAULT_SCHEMA_CLASS": "scrm.api_schema.ApiSchema",
    "EXCEPTION_HANDLER": "scrm.api.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Social CRM API",
    "DESCRIPTION": (
        "Everything the browser does, for scripts and other systems. Authenticate with a "
        "personal token (`Authorization: Bearer scrm_...`, made on your API tokens page) or "
        "the browser session. Access is the same as in the browser."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "DirectionEnum": "conversations.models.Direction",
        "RoutingRuleEventsEnum": "conversations.api.EVENT_CHOICES",
        "PolicyActionEnum": "governance.models.PolicyAction",
        "RetentionActionEnum": "governance.models.RetentionAction",
    },
}

# --- Email ------------------------------------------------------------------------------
_email = env.email_url("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST", "")
EMAIL_PORT = _email.get("EMAIL_PORT", 25)
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="social-crm@localhost")

# --- Security ---------------------------------------------------------------------------
X_FRAME_OPTIONS = "DENY"
# Pages load scripts, styles, fonts and data only from this site, so text that slipped past
# escaping could still run nothing. htmx is served from static files; no page has inline script.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        # style="..." attributes carry per-row values (tag colours, chart bar heights). They
        # cannot run script; <style> elements stay blocked (style-src-elem falls back to 'self').
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # Load balancers and container probes ask over plain HTTP from inside.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    if env.bool("BEHIND_TLS_PROXY", default=True):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Product settings -------------------------------------------------------------------
SCRM_INBOX_PAGE_SIZE = env.int("SCRM_INBOX_PAGE_SIZE", default=50)
# A conversation page shows its newest messages; older ones load a page at a time.
SCRM_THREAD_PAGE_SIZE = env.int("SCRM_THREAD_PAGE_SIZE", default=100)
# Timeline events a conversation page shows at first; "Show older events" fetches as many more.
SCRM_TIMELINE_PAGE_SIZE = env.int("SCRM_TIMELINE_PAGE_SIZE", default=50)
# The inbox's view counts (Mine, Unassigned, ...) are counted at most this often per user,
# and again right after the user changes something; 0 counts on every page.
SCRM_INBOX_COUNTS_SECONDS = env.int("SCRM_INBOX_COUNTS_SECONDS", default=15)
# The address people outside the product use to reach it: links in escalation emails and
# webhooks point here.
SITE_URL = env.str("SITE_URL", default="http://localhost:8000").rstrip("/")
# The KPI digest goes to managers and admins when a week (month, quarter) has ended, from this
# hour (TIME_ZONE) of the next one's first day.
SCRM_DIGEST_ENABLED = env.bool("SCRM_DIGEST_ENABLED", default=True)
SCRM_DIGEST_PERIOD = env.str("SCRM_DIGEST_PERIOD", default="week")
if SCRM_DIGEST_PERIOD not in ("week", "month", "quarter"):
    raise ImproperlyConfigured("SCRM_DIGEST_PERIOD is week, month or quarter.")
SCRM_DIGEST_HOUR = env.int("SCRM_DIGEST_HOUR", default=7)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # django-axes logs every login at INFO; lockouts and failures are WARNING.
        "axes": {"level": "WARNING"},
    },
}
