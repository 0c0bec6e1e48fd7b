"""The container stack only names programs, commands and modules this project really has.

Docker is not needed: docker-compose.yml and the Dockerfile are read as text, and every
command they run is checked against what it would start, the way the program itself would
parse it (Django's management commands, gunicorn's option parser, Celery's command set).
"""

import contextlib
import importlib
import io
import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from celery import Celery
from celery.app.utils import find_app
from celery.bin.celery import celery as celery_cli
from django.core.management import get_commands, load_command_class
from django.core.management.base import CommandError
from django.urls import resolve
from gunicorn.config import Config as GunicornConfig

from scrm.health import healthz

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

APP_SERVICES = ("web", "worker", "beat")
BACKING_SERVICES = ("postgres", "redis")
CELERY_SUBCOMMANDS = {"worker", "beat"}
SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash"}


class CommandCheckError(Exception):
    """A container command names something that does not exist or would not start."""


# --- Reading the files ------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service(name: str) -> dict[str, Any]:
    return load_compose()["services"][name]


def environment_of(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whichever of the two compose forms it uses."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    pairs = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        pairs.append((instruction.upper(), arguments.strip()))
    return pairs


# --- Checking a command -----------------------------------------------------------------


def split_command(command: str | list[str]) -> list[list[str]]:
    """The programs a command runs, one argv each: ``sh -c "a && b"`` runs two."""
    argv = shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]
    if argv[:1] and argv[0] in SHELLS:
        if len(argv) != 3 or argv[1] != "-c":
            raise CommandCheckError(f"expected '{argv[0]} -c <script>', got {argv!r}")
        parts = [shlex.split(part) for part in argv[2].split("&&")]
    else:
        parts = [argv]
    # `exec prog ...` replaces the shell with prog; the program is what matters.
    return [part[1:] if part[:1] == ["exec"] else part for part in parts]


def _check_manage_py(args: list[str]) -> None:
    if len(args) < 2 or args[0] != "manage.py":
        raise CommandCheckError(f"python should run 'manage.py <command>', got {args!r}")
    if not (ROOT / "manage.py").is_file():
        raise CommandCheckError("manage.py is missing")
    name, options = args[1], args[2:]
    app_name = get_commands().get(name)
    if app_name is None:
        raise CommandCheckError(f"{name!r} is not a management command")
    parser = load_command_class(app_name, name).create_parser("manage.py", name)
    try:
        parser.parse_args(options)
    except CommandError as exc:
        raise CommandCheckError(f"manage.py {name}: {exc}") from exc


def _check_gunicorn(args: list[str]) -> None:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parsed = GunicornConfig().parser().parse_args(args)
    except SystemExit as exc:
        reason = stderr.getvalue().strip().splitlines()[-1:]
        raise CommandCheckError(f"gunicorn rejects {args!r}: {reason}") from exc
    if len(parsed.args) != 1:
        raise CommandCheckError(f"gunicorn needs one 'module:variable' target, got {parsed.args}")
    module_name, _, variable = parsed.args[0].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandCheckError(f"gunicorn target module {module_name!r}: {exc}") from exc
    application = getattr(module, variable or "application", None)
    if not callable(application):
        raise CommandCheckError(f"{parsed.args[0]!r} is not a WSGI application")


def _option_names(command: click.Command, *, with_value_only: bool = False) -> set[str]:
    return {
        name
        for param in command.params
        if isinstance(param, click.Option) and not (with_value_only and param.is_flag)
        for name in (*param.opts, *param.secondary_opts)
    }


def _check_celery(args: list[str]) -> None:
    global_options = _option_names(celery_cli)
    takes_value = _option_names(celery_cli, with_value_only=True)
    app_name = subcommand = None
    rest: list[str] = []
    tokens = iter(args)
    for token in tokens:
        name, has_inline_value, value = token.partition("=")
        if not token.startswith("-"):
            subcommand, rest = token, list(tokens)
            break
        if name not in global_options:
            raise CommandCheckError(f"celery has no global option {name!r}")
        if name in takes_value and not has_inline_value:
            value = next(tokens, "")
        if name in {"-A", "--app"}:
            app_name = value
    if not app_name:
        raise CommandCheckError("celery needs --app")
    try:
        app = find_app(app_name)
    except (ImportError, AttributeError) as exc:
        raise CommandCheckError(f"celery cannot load app {app_name!r}: {exc}") from exc
    if not isinstance(app, Celery):
        raise CommandCheckError(f"{app_name!r} is not a Celery app")
    if subcommand not in CELERY_SUBCOMMANDS:
        raise CommandCheckError(f"celery {subcommand!r} is neither worker nor beat")
    known = _option_names(celery_cli.commands[subcommand])
    for token in rest:
        if token.startswith("-") and token.partition("=")[0] not in known:
            raise CommandCheckError(f"celery {subcommand} has no option {token!r}")


PROGRAMS = {"python": _check_manage_py, "gunicorn": _check_gunicorn, "celery": _check_celery}


def check_program(argv: list[str]) -> None:
    """Raise CommandCheckError unless argv starts something that exists in this project."""
    if not argv:
        raise CommandCheckError("empty command")
    program, args = argv[0], argv[1:]
    if program not in PROGRAMS:
        raise CommandCheckError(f"{program!r} is not one of {sorted(PROGRAMS)}")
    PROGRAMS[program](args)


def check_command(command: str | list[str]) -> None:
    for argv in split_command(command):
        check_program(argv)


# --- docker-compose.yml -----------------------------------------------------------------


def test_compose_defines_the_whole_stack():
    services = load_compose()["services"]
    assert set(APP_SERVICES + BACKING_SERVICES) <= set(services)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_app_service_builds_from_the_dockerfile(name):
    build = service(name)["build"]
    if isinstance(build, str):
        build = {"context": build}
    dockerfile = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
    assert dockerfile.resolve() == DOCKERFILE


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_app_service_command_exists(name):
    command = service(name)["command"]
    assert split_command(command), f"{name} runs nothing"
    check_command(command)


def test_web_migrates_before_serving():
    programs = split_command(service("web")["command"])
    assert programs[0][:3] == ["python", "manage.py", "migrate"]
    assert programs[-1][0] == "gunicorn"
    assert any(arg.startswith("0.0.0.0:8000") for arg in programs[-1])


def test_worker_and_beat_run_the_matching_celery_subcommand():
    for name in ("worker", "beat"):
        argv = split_command(service(name)["command"])[0]
        assert argv[0] == "celery"
        assert name in argv


def test_beat_keeps_its_schedule_on_the_data_volume():
    argv = split_command(service("beat")["command"])[0]
    schedule = argv[argv.index("--schedule") + 1]
    assert schedule.startswith("/data/")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_get_the_database_broker_and_data_volume(name):
    svc = service(name)
    env = environment_of(svc)
    assert env["DJANGO_ENV"] == "production"
    assert env["DATABASE_URL"].startswith("postgres://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379/")
    for required in ("SECRET_KEY", "ALLOWED_HOSTS", "SCRM_ENCRYPTION_KEYS"):
        assert env.get(required), f"{name} lacks {required}"
    mounts = [str(volume).split(":")[:2] for volume in svc.get("volumes", [])]
    assert ["data", "/data"] in mounts


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_healthy_backing_services(name):
    depends_on = service(name)["depends_on"]
    for backing in BACKING_SERVICES:
        assert depends_on[backing]["condition"] == "service_healthy"


@pytest.mark.parametrize(("name", "probe"), [("postgres", "pg_isready"), ("redis", "redis-cli")])
def test_backing_services_have_healthchecks(name, probe):
    check = service(name)["healthcheck"]["test"]
    words = shlex.split(check) if isinstance(check, str) else check
    assert words[0] in {"CMD", "CMD-SHELL"}
    assert probe in " ".join(words[1:])


def test_web_healthcheck_probes_the_health_endpoint():
    check = service("web")["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"]
    script = check[3]
    compile(script, "<healthcheck>", "exec")
    match = re.search(r"http://127\.0\.0\.1:8000(/[^\"']*)", script)
    assert match, "the healthcheck should call the app on port 8000"
    assert resolve(match.group(1)).func is healthz


def test_postgres_and_redis_keep_their_data_in_named_volumes():
    compose = load_compose()
    named = set(compose.get("volumes") or {})
    for name in BACKING_SERVICES:
        sources = {str(volume).split(":")[0] for volume in service(name).get("volumes", [])}
        assert sources & named, f"{name} has no named volume"


# --- Dockerfile -------------------------------------------------------------------------


def test_dockerfile_installs_an_existing_runtime_requirements_file():
    installs = [
        args
        for instruction, args in dockerfile_instructions()
        if instruction == "RUN" and "pip install" in args
    ]
    assert installs, "the Dockerfile installs no requirements"
    files = [m for args in installs for m in re.findall(r"-r\s+(\S+)", args)]
    assert files, "pip install should use -r <requirements file>"
    for name in files:
        assert (ROOT / name).is_file(), f"{name} does not exist"
        assert "dev" not in name, "the image needs only the runtime requirements"


def test_dockerfile_default_command_exists():
    commands = [args for instruction, args in dockerfile_instructions() if instruction == "CMD"]
    assert commands, "the Dockerfile has no CMD"
    argv = json.loads(commands[-1])
    check_program(argv)
    assert argv[0] == "gunicorn"
    assert "0.0.0.0:8000" in argv


def test_dockerfile_runs_as_a_non_root_user():
    users = [args for instruction, args in dockerfile_instructions() if instruction == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}


# --- The checker itself -----------------------------------------------------------------


def test_split_command_separates_a_shell_chain():
    command = ["sh", "-c", "python manage.py migrate --noinput && exec gunicorn a.b:app"]
    assert split_command(command) == [
        ["python", "manage.py", "migrate", "--noinput"],
        ["gunicorn", "a.b:app"],
    ]
    assert split_command("celery --app scrm worker") == [["celery", "--app", "scrm", "worker"]]


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("python manage.py no_such_command", "not a management command"),
        ("python manage.py migrate --no-such-flag", "manage.py migrate"),
        ("python other.py migrate", "manage.py"),
        ("uwsgi scrm.wsgi:application", "is not one of"),
        ("gunicorn scrm.no_such_module:application", "target module"),
        ("gunicorn scrm.wsgi:no_such_app", "not a WSGI application"),
        ("gunicorn scrm.wsgi:application --no-such-flag", "gunicorn rejects"),
        ("celery worker", "needs --app"),
        ("celery --app no_such_package worker", "cannot load app"),
        ("celery --app scrm.wsgi worker", "cannot load app|not a Celery app"),
        ("celery --app scrm flower", "neither worker nor beat"),
        ("celery --app scrm beat --no-such-flag", "no option"),
        ('sh -c "python manage.py migrate && python manage.py bogus"', "bogus"),
    ],
)
def test_command_check_rejects_what_does_not_exist(command, reason):
    with pytest.raises(CommandCheckError, match=reason):
        check_command(command)


def test_every_worker_command_serves_every_queue():
    from django.conf import settings

    expected = ",".join(settings.SCRM_WORKER_QUEUES)
    procfile = (ROOT / "Procfile.dev").read_text()
    assert f"--queues {expected}" in procfile
    compose_worker = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker"]
    assert f"--queues {expected}" in str(compose_worker["command"])
