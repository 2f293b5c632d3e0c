"""Schemathesis against the OpenAPI document a real gateway serves: no 5xx, no answer off the schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")

from gateway_helpers import TOKEN, GatewayProcess, process_env  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import checks  # noqa: E402

#: the streamed response never ends on its own: it is tested in test_http_streaming.py
EXCLUDED = "/v1/stream"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("gateway") / "serve.log"
    gateway = GatewayProcess(log, ["--token", TOKEN, "--max-wait", "0.05"], process_env())
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def api_schema(served: GatewayProcess) -> Any:
    """The served document without the stream (schemathesis would also read it to find tokens)."""
    document = httpx.get(f"{served.url}/openapi.json", timeout=30).json()
    del document["paths"][EXCLUDED]
    # fuzzing only: the coverage phase enumerates hundreds of boundary cases per operation
    config = schemathesis.Config.from_dict(
        {
            "phases": {
                "coverage": {"enabled": False},
                "examples": {"enabled": False},
                "stateful": {"enabled": False},
                "fuzzing": {"extra-data-sources": {"responses": False}},
            }
        }
    )
    return schemathesis.openapi.from_dict(document, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_gateway_answers_every_request_within_its_schema(case: Any, served: GatewayProcess) -> None:
    """Generated requests (valid and invalid) get no 5xx, and every answer matches the document."""
    case.call_and_validate(
        base_url=served.url,
        headers={"authorization": f"Bearer {TOKEN}"},
        checks=[
            checks.not_a_server_error,
            checks.response_schema_conformance,
            checks.content_type_conformance,
            checks.status_code_conformance,
        ],
        timeout=30,
    )
