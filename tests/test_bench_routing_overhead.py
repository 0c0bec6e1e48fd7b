"""Which runs the routing comparison makes."""

import pytest

from bench.routing_overhead import parse_args


def test_every_variant_is_compared_unless_told_otherwise():
    assert parse_args([]).variants == ["rules", "sla", "all"]


def test_the_variants_can_be_narrowed_to_the_rules_alone():
    assert parse_args(["--variants", "rules"]).variants == ["rules"]
    assert parse_args(["--variants", "all, rules,rules"]).variants == ["all", "rules"]


@pytest.mark.parametrize("given", ["off", "rules,bogus", ",", ""])
def test_an_unknown_or_empty_variant_is_refused(given, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--variants", given])
    assert "choose among rules, sla and all" in capsys.readouterr().err
