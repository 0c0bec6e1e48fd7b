"""The benchmark's timers of the pipeline's parts: every part they name exists, each is
counted while timed, and everything is put back as it was, also when the timed block fails."""

import importlib
from typing import Any

import pytest

from bench.sections import PARTS, Part, sections_rows, sections_timed


class Sample:
    @classmethod
    def build(cls, value: int) -> tuple[type, int]:
        return cls, value

    def double(self, value: int) -> int:
        return value * 2


def triple(value: int) -> int:
    return value * 3


HERE = __name__
SAMPLE_PARTS = (
    Part("module function", HERE, "triple"),
    Part("class method", HERE, "Sample.build"),
    Part("method", HERE, "Sample.double", per_post=True),
)


def _held(part: Part) -> Any:
    owner: Any = importlib.import_module(part.module)
    *path, attribute = part.name.split(".")
    for step in path:
        owner = getattr(owner, step)
    return vars(owner)[attribute]


@pytest.mark.parametrize("part", PARTS, ids=lambda part: part.label.strip())
def test_every_part_names_what_the_pipeline_calls(part: Part) -> None:
    assert callable(getattr(_held(part), "__func__", _held(part)))


def test_parts_are_counted_and_put_back() -> None:
    before = [_held(part) for part in SAMPLE_PARTS]
    module = importlib.import_module(HERE)
    with sections_timed(SAMPLE_PARTS) as timings:
        assert module.triple(2) == 6
        assert Sample.build(4) == (Sample, 4)
        assert Sample().double(5) == 10
        assert Sample().double(6) == 12
        assert isinstance(vars(Sample)["build"], classmethod)
        assert _held(SAMPLE_PARTS[0]) is not before[0]
    assert [_held(part) for part in SAMPLE_PARTS] == before
    assert [(t.label, t.calls, t.per_post) for t in timings] == [
        ("module function", 1, False),
        ("class method", 1, False),
        ("method", 2, True),
    ]
    assert all(t.seconds > 0 for t in timings)
    rows = sections_rows(timings, phase_seconds=10.0)
    assert rows[2]["calls"] == 2
    assert rows[2]["share_of_phase"] == pytest.approx(timings[2].seconds / 10.0)


def test_parts_are_put_back_when_the_block_fails() -> None:
    before = [_held(part) for part in SAMPLE_PARTS]
    with pytest.raises(RuntimeError), sections_timed(SAMPLE_PARTS):
        raise RuntimeError("the phase failed")
    assert [_held(part) for part in SAMPLE_PARTS] == before


def test_a_failing_call_is_still_timed() -> None:
    def fails(value: int) -> int:
        raise ValueError(value)

    module = importlib.import_module(HERE)
    module.fails = fails  # type: ignore[attr-defined]
    try:
        with sections_timed((Part("fails", HERE, "fails"),)) as timings, pytest.raises(ValueError):
            module.fails(1)
        assert timings[0].calls == 1
    finally:
        del module.fails
