"""The ingest benchmark names each query by the innermost frame of the project's own code."""

import sys

from bench import run


def _query_from_project() -> str:
    return run._caller(sys._getframe())


def test_the_innermost_project_frame_names_the_query():
    label = _query_from_project()
    line = _query_from_project.__code__.co_firstlineno + 1
    assert label == f"tests/test_bench_call_sites.py:{line} _query_from_project"


def test_frames_of_libraries_and_of_the_harness_are_passed_over():
    assert run._project_path(run.__file__) is None
    assert run._project_path(run.VENV_DIR.joinpath("lib", "django", "db.py").as_posix()) is None
    assert run._project_path("/elsewhere/module.py") is None
    assert run._project_path(str(run.REPO_ROOT / "scrm" / "bulk.py")) == "scrm/bulk.py"


def test_outside_the_project_when_no_frame_is_its_own():
    assert run._caller(None) == "(outside the project)"
