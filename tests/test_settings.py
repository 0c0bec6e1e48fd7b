"""The production profile, checked in a fresh interpreter since settings load once."""

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    inherited = {"SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_ENV", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    clean = {k: v for k, v in os.environ.items() if k not in inherited}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _production(tmp_path) -> dict[str, str]:
    return {
        "DJANGO_ENV": "production",
        "SECRET_KEY": Fernet.generate_key().decode() + Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "crm.example.com",
        "SCRM_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "SCRM_DATA_DIR": str(tmp_path),
    }


def test_the_production_profile_passes_the_deploy_check(tmp_path):
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **_production(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = _production(tmp_path)
    del env["SECRET_KEY"]
    result = _manage("check", **env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_the_development_profile_keeps_its_generated_secret_key(tmp_path):
    env = {"SCRM_DATA_DIR": str(tmp_path), "DJANGO_ENV": "development"}
    assert _manage("check", **env).returncode == 0
    key = (tmp_path / "secret_key").read_text()
    assert _manage("check", **env).returncode == 0
    assert (tmp_path / "secret_key").read_text() == key
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def _setting(names: str, **env: str) -> list[str]:
    code = (
        "from django.conf import settings; "
        f"print(*[getattr(settings, n) for n in {names.split()!r}], sep='|')"
    )
    result = _manage("shell", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1].split("|")


def test_an_idle_timeout_makes_every_request_push_the_session_on(tmp_path):
    names = "SESSION_SAVE_EVERY_REQUEST SESSION_COOKIE_AGE SCRM_SESSION_MAX_AGE"
    env = {"SCRM_DATA_DIR": str(tmp_path), "DJANGO_ENV": "development"}
    assert _setting("SESSION_COOKIE_AGE SCRM_SESSION_MAX_AGE", **env) == ["28800", "28800"]
    idle = _setting(names, SESSION_IDLE_TIMEOUT="900", SESSION_COOKIE_AGE="3600", **env)
    assert idle == ["True", "900", "3600"]


def test_the_login_lockout_is_configured_from_the_environment(tmp_path):
    env = {"SCRM_DATA_DIR": str(tmp_path), "DJANGO_ENV": "development"}
    assert _setting("AXES_FAILURE_LIMIT AXES_COOLOFF_TIME", **env) == ["5", "0:15:00"]
    tuned = _setting(
        "AXES_FAILURE_LIMIT AXES_COOLOFF_TIME",
        SCRM_LOGIN_FAILURE_LIMIT="3",
        SCRM_LOGIN_COOLOFF_MINUTES="60",
        **env,
    )
    assert tuned == ["3", "1:00:00"]
