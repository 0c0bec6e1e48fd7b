"""What the benchmarks say of the machine they ran on."""

import os
import re

from bench.support import machine_description


def test_the_machine_is_named_with_its_cpus():
    description = machine_description()
    cpus = len(os.sched_getaffinity(0))
    assert description.endswith(f", {cpus} CPUs")
    model = description.removesuffix(f", {cpus} CPUs")
    assert model and not model.startswith(",")
    if " at " in model:
        assert re.search(r" at [\d,]+ MHz$", model)
