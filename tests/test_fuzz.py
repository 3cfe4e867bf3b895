"""Property-based fuzzing of every input parser, at a size the suite affords.

``bench/fuzz.py`` runs the same targets (tests/fuzz_targets.py) at 10^5 cases.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from fuzz_targets import TARGETS, Target

#: Cases per target here; the whole file stays well under a minute on 2 cores.
CASES = 300


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_parser_holds_its_contract_on_fuzzed_input(target: Target) -> None:
    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(target.strategy)
    def run(value: Any) -> None:
        target.check(value)

    run()
