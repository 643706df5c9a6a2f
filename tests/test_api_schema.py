"""A schemathesis run over the OpenAPI schema with a valid operator key: no 5xx, and every
response conforms to the schema it declares (status codes, content types, bodies).

Driven through schemathesis' Python API (operation strategies + ``call_and_validate``)
inside plain Hypothesis tests, one per API operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import CheckFunction
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.api_support import Api, build_api, engine_for

# Operations whose bodies carry rules OpenAPI cannot state, refused with a 422 that names
# them even when the body matches the schema: a plan's start on its interval boundary, a
# tariff's IANA time zone existing, the plan being feasible for the battery; a target's
# group or site existing and the target within its capability; a curve within the
# group's capability; a what-if's one tariff of two kinds, PV as long as the load, a SoC
# window holding the start and end; a history range not reversed and at most a year.
SEMANTIC_422 = {
    ("POST", "/api/v1/schedules"),
    ("POST", "/api/v1/schedules/what-if"),
    ("GET", "/api/v1/history/{kind}"),
    ("POST", "/api/v1/dispatch/targets"),
    ("PUT", "/api/v1/bids/{bid_id}/curve"),
}

pytestmark = pytest.mark.slow


@pytest.fixture
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    gen = engine_for("sqlite", tmp_path, request)
    built = build_api(next(gen))
    yield built
    for _ in gen:
        pass


def test_every_operation_conforms_to_its_schema(api: Api) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def run(case: schemathesis.Case) -> None:
            semantic = (case.method.upper(), case.path) in SEMANTIC_422
            excluded: list[CheckFunction] | None = [positive_data_acceptance] if semantic else None
            response = case.call_and_validate(headers=api.h("alice"), excluded_checks=excluded)
            if semantic and response.status_code == 422:
                assert response.json()["detail"][0]["loc"][0] in ("body", "query")

        run()
