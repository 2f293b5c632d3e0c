"""Submitting by name through a real gateway: explicit ids, and what the config App signs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_helpers import TOKEN, GatewayProcess, process_env

from jobchain.signing import Signer, check_job

CONFIG = str(Path(__file__).with_name("configs") / "gateway_app.py")
AUTH = {"authorization": f"Bearer {TOKEN}"}
KEY = "gateway-signing-key-0123456789"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with the test config, whose App signs with KEY (from the environment)."""
    log = tmp_path_factory.mktemp("gateway") / "serve.log"
    process = GatewayProcess(
        log, ["--config", CONFIG, "--token", TOKEN], process_env(JOBCHAIN_SIGNING_KEYS=KEY)
    )
    yield process
    process.stop()


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=30) as c:
        yield c


def stored_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()["job"]
    return job


def test_submit_with_an_id_stores_the_job_under_it(client: httpx.Client) -> None:
    """An item's "id" is the job's id; submitting it again stores nothing and answers the same id."""
    response = client.post("/v1/submit", json={"target": "add", "args": [1, 2], "id": "http-sum-1"})
    assert response.status_code == 201, response.text
    assert response.json() == {"id": "http-sum-1", "kind": "job", "target": "add"}
    again = client.post("/v1/submit", json={"target": "add", "args": [40, 2], "id": "http-sum-1"})
    assert again.status_code == 201, again.text
    assert again.json()["id"] == "http-sum-1"
    assert stored_job(client, "http-sum-1")["args"] == [1, 2]


def test_submit_of_a_chain_with_an_id_names_the_chain(client: httpx.Client) -> None:
    """A chain's "id" is the chain's; its members' job ids derive from it."""
    response = client.post("/v1/submit", json={"target": "pipeline", "args": [1, 2], "id": "http-pipe"})
    assert response.status_code == 201, response.text
    assert response.json() == {"id": "http-pipe", "kind": "chain", "target": "pipeline"}
    record = client.get("/v1/chains/http-pipe").json()
    assert [m["job_id"] for s in record["steps"] for m in s["members"]] == ["http-pipe.0.0", "http-pipe.1.0"]


def test_submit_with_a_bad_id_is_422_and_stores_nothing(client: httpx.Client) -> None:
    """An id with whitespace, '/' or over 200 characters: 422 at $.items[i].id; nothing stored."""
    for bad in ("has space", "a/b", "x" * 201, "", 7):
        items = [
            {"target": "add", "args": [1, 1], "id": "http-never"},
            {"target": "add", "args": [1, 1], "id": bad},
        ]
        response = client.post("/v1/submit", json={"items": items})
        assert response.status_code == 422, (bad, response.text)
        error = response.json()["error"]
        assert error["path"] == "$.items[1].id"
    assert client.get("/v1/jobs/http-never").status_code == 404


def test_submit_with_a_unique_key_answers_the_holder(client: httpx.Client) -> None:
    """An item's "unique_key": a second submit while the first job holds it stores nothing, answers its id."""
    first = client.post("/v1/submit", json={"target": "add", "args": [1, 2], "unique_key": "http-once"})
    assert first.status_code == 201, first.text
    items = [
        {"target": "add", "args": [3, 4], "unique_key": "http-once"},
        {"target": "add", "args": [5, 6], "unique_key": "http-timed", "unique_for": 3600},
        {"target": "add", "args": [7, 8], "unique_key": "http-timed", "unique_for": 3600},
    ]
    again = client.post("/v1/submit", json={"items": items})
    assert again.status_code == 201, again.text
    ids = [item["id"] for item in again.json()["items"]]
    assert ids[0] == first.json()["id"]
    assert ids[1] == ids[2] != ids[0]
    assert stored_job(client, ids[0])["unique"] == "http-once"
    assert "unique" not in stored_job(client, ids[1])  # held for a time: the job does not carry it


def test_a_chain_with_a_unique_key_is_422(client: httpx.Client) -> None:
    """A chain cannot be unique: 422 at the item's unique_key, nothing stored."""
    response = client.post("/v1/submit", json={"target": "pipeline", "args": [1, 2], "unique_key": "k"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["path"] == "$.unique_key"


def test_submit_by_name_is_signed_with_the_config_apps_keys(client: httpx.Client) -> None:
    """Jobs and chains the gateway submits are signed with its App's keys, so signing workers run them."""
    from jobchain.model import Job

    job_id = client.post("/v1/submit", json={"target": "double", "args": [4]}).json()["id"]
    job = Job.from_wire(stored_job(client, job_id))
    assert job.sig is not None
    assert check_job(Signer([KEY]), job) is None
    chain_id = client.post("/v1/submit", json={"target": "pipeline", "args": [1, 2]}).json()["id"]
    first = client.get(f"/v1/chains/{chain_id}").json()["steps"][0]["members"][0]["job_id"]
    assert check_job(Signer([KEY]), Job.from_wire(stored_job(client, first))) is None
