"""Security and bad input, each against a real ``jobchain http serve`` process on a loopback port."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import forkserver
import httpx
import pytest
from gateway_helpers import ROOT, TOKEN, GatewayProcess, process_env

CONFIG = str(Path(__file__).with_name("configs") / "gateway_app.py")
AUTH = {"authorization": f"Bearer {TOKEN}"}
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway for the module: the test config, an allow-list without `secret`, a 64 KiB body limit."""
    log = tmp_path_factory.mktemp("gateway") / "serve.log"
    args = ["--config", CONFIG, "--allow-task", "add,double,echo", "--allow-task", "pipeline"]
    args += ["--max-body", "64KiB", "--token", TOKEN]
    process = GatewayProcess(log, args, process_env())
    yield process
    process.stop()


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=30) as c:
        yield c


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON error of a response, after checking it is JSON and carries no traceback."""
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    error: dict[str, Any] = response.json()["error"]
    assert error["status"] == response.status_code
    return error


def test_no_token_is_401(gateway: GatewayProcess) -> None:
    """A request without a token is refused with 401 and a Bearer challenge."""
    response = httpx.get(f"{gateway.url}/v1/stats")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert error_of(response)["code"] == "unauthorized"


def test_wrong_token_is_401(gateway: GatewayProcess) -> None:
    """A request with another token, or another scheme, is refused with 401."""
    for header in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer", f"Bearer {TOKEN[:-1]}"):
        response = httpx.post(
            f"{gateway.url}/v1/submit",
            json={"target": "add", "args": [1, 2]},
            headers={"authorization": header},
        )
        assert response.status_code == 401, header
        error_of(response)


def test_client_reports_a_refused_token_as_an_authentication_failure(gateway: GatewayProcess) -> None:
    """The http:// backend turns a 401 into BackendAuthError (not an outage): a worker stops on it."""
    from jobchain_http.client import HttpBackend

    from jobchain.errors import BackendAuthError, BackendUnavailableError

    backend = HttpBackend.from_url(gateway.url.replace("://", f"://:{TOKEN}x@"))
    try:
        with pytest.raises(BackendAuthError, match="refused the token") as caught:
            backend.stats()
        assert not isinstance(caught.value, BackendUnavailableError)
    finally:
        backend.close()


def test_openapi_and_health_need_no_token(gateway: GatewayProcess) -> None:
    """The OpenAPI document and the liveness check are public; nothing else is."""
    assert httpx.get(f"{gateway.url}/openapi.json").json()["openapi"].startswith("3.1")
    assert httpx.get(f"{gateway.url}/v1/health").json() == {"ok": True, "max_body": 65536}


def test_submit_by_name_works(client: httpx.Client) -> None:
    """An allowed task with good arguments is accepted (201) and can be read back."""
    response = client.post("/v1/submit", json={"target": "add", "args": [1, 2]})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    record = client.get(f"/v1/jobs/{job_id}").json()
    assert (record["state"], record["job"]["task"], record["job"]["args"]) == ("queued", "add", [1, 2])


def test_chain_by_name_works(client: httpx.Client) -> None:
    """A chain of the config, allowed by its name, is submitted and its record is readable."""
    response = client.post("/v1/submit", json={"target": "pipeline", "args": [1, 2]})
    assert response.status_code == 201, response.text
    assert response.json()["kind"] == "chain"
    record = client.get(f"/v1/chains/{response.json()['id']}").json()
    assert [s["members"][0]["task"] for s in record["steps"]] == ["add", "double"]


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    """A body whose declared length is over --max-body is refused with 413."""
    big = {"target": "echo", "args": ["x" * (LIMIT + 10)]}
    response = client.post("/v1/submit", json=big)
    assert response.status_code == 413
    assert error_of(response)["code"] == "body_too_large"


def _raw_exchange(url: str, head: bytes, body: bytes) -> bytes:
    """Send ``head`` and only ``body`` on a fresh socket, then read the answer without sending more."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_413_comes_before_the_body_is_read(gateway: GatewayProcess) -> None:
    """A 1 GB Content-Length is refused at once: the gateway answers after 10 bytes of the body."""
    head = (
        b"POST /v1/submit HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000000000\r\n\r\n".encode()
    )
    answer = _raw_exchange(gateway.url, head, b'{"target":')
    assert answer.startswith(b"HTTP/1.1 413")


def test_chunked_body_over_the_limit_is_413(gateway: GatewayProcess) -> None:
    """A chunked body (no length given) is cut off with 413 once what was read passes the limit."""
    head = (
        b"POST /v1/submit HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    chunk = b"x" * 16384
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6))  # 96 KiB, never terminated
    answer = _raw_exchange(gateway.url, head, body)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"Traceback" not in answer


def test_wrong_content_type_is_415(client: httpx.Client) -> None:
    """A body that is not declared as JSON is refused with 415, whatever it holds."""
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
        response = client.post(
            "/v1/submit", content=b'{"target": "add", "args": [1, 2]}', headers={"content-type": ctype}
        )
        assert response.status_code == 415, ctype
        assert error_of(response)["code"] == "unsupported_media_type"


def test_task_not_on_the_allow_list_is_403(client: httpx.Client) -> None:
    """A task the config declares but the allow-list leaves out is refused with 403, by name and raw."""
    response = client.post("/v1/submit", json={"target": "secret"})
    assert response.status_code == 403
    assert error_of(response)["path"] == "$.target"
    job = {"id": "raw-1", "task": "secret", "enqueued_at": 1.0}
    response = client.post("/v1/enqueue", json={"jobs": [job]})
    assert response.status_code == 403
    assert error_of(response)["path"] == "$.jobs[0].task"


def test_unknown_task_is_404(client: httpx.Client) -> None:
    """A name the config does not declare is 404, naming it; so is a raw job of an unknown task."""
    response = client.post(
        "/v1/submit", json={"items": [{"target": "add", "args": [1, 2]}, {"target": "nope"}]}
    )
    assert response.status_code == 404
    error = error_of(response)
    assert (error["code"], error["path"]) == ("unknown_target", "$.items[1].target")
    assert "'nope'" in error["message"]
    response = client.post(
        "/v1/enqueue", json={"jobs": [{"id": "raw-2", "task": "nope", "enqueued_at": 1.0}]}
    )
    assert response.status_code == 404


def test_bad_arguments_are_422_naming_the_path(client: httpx.Client) -> None:
    """Arguments the task cannot take, or of the wrong shape, are 422 with the JSON path of the culprit."""
    cases = [
        ({"target": "add", "args": [1]}, "$.args", "missing a required argument"),
        (
            {"items": [{"target": "echo", "args": ["a"]}, {"target": "add", "kwargs": {"c": 1}}]},
            "$.items[1].args",
            "",
        ),
        ({"target": "add", "args": {"a": 1}}, "$.args", "expected an array"),
        ({"target": "add", "args": [1, 2], "priority": "high"}, "$.priority", "integer"),
        ({"target": "add", "args": [1, 2], "delay": -1}, "$.delay", ">= 0"),
        ({"target": ""}, "$.target", "non-empty"),
    ]
    for body, path, words in cases:
        response = client.post("/v1/submit", json=body)
        assert response.status_code == 422, body
        error = error_of(response)
        assert error["path"] == path, body
        assert words in error["message"], error


def test_rejected_batch_stores_nothing(client: httpx.Client) -> None:
    """A batch with one bad item is refused whole: the good items before it are not enqueued."""
    before = {s["queue"]: s["ready"] for s in client.get("/v1/stats").json()["queues"]}
    body = {"items": [{"target": "add", "args": [1, 2], "queue": "batchq"}, {"target": "add", "args": [1]}]}
    assert client.post("/v1/submit", json=body).status_code == 422
    after = {s["queue"]: s["ready"] for s in client.get("/v1/stats").json()["queues"]}
    assert after.get("batchq", 0) == before.get("batchq", 0) == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/reserve?wait=1000000000"),
        ("POST", "/v1/reserve?limit=1000000000"),
        ("POST", "/v1/reserve?lease=0"),
        ("POST", "/v1/reserve?wait=nan"),
        ("POST", "/v1/reserve?limit=ten"),
        ("GET", "/v1/stream?prefetch=1000000000"),
        ("GET", "/v1/failed?limit=1000000000"),
        ("GET", "/v1/failed?offset=-1"),
        ("POST", "/v1/lines/q/reserve?wait=1e9"),
    ],
)
def test_absurd_query_bounds_are_400(client: httpx.Client, method: str, path: str) -> None:
    """Query parameters outside their bounds are refused with 400 naming the parameter, at once."""
    response = client.request(method, path, timeout=10)
    assert response.status_code == 400, response.text
    name = path.split("?")[1].split("=")[0]
    assert error_of(response)["path"] == name


def test_ids_with_markup_come_back_json_escaped(client: httpx.Client) -> None:
    """An id with markup is echoed only inside JSON, with < > & escaped, never as HTML."""
    nasty = '<img src=x onerror="alert(1)">&amp;'
    for path in (f"/v1/jobs/{nasty}", f"/v1/chains/{nasty}", f"/v1/failed/{nasty}"):
        response = client.get(path)
        assert response.status_code == 404
        assert not set("<>&") & set(response.text)
        assert nasty in error_of(response)["message"]  # the JSON decodes back to the id
    response = client.post("/v1/submit", json={"target": nasty})
    assert response.status_code == 404
    assert "<script>" not in response.text


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"target": NaN}',
        b"[" * 100000 + b"]" * 100000,
        b"\xff\xfe\x00garbage",
        b'{"outcomes": [{"job_id": "x", "token": "t", "outcome": "completed"}]}',
        b'{"outcomes": "all of them"}',
        b"null",
    ],
)
def test_malformed_bodies_never_show_a_traceback(client: httpx.Client, body: bytes) -> None:
    """Malformed or hostile JSON gets a 4xx JSON error, never a 5xx or a traceback."""
    for path in ("/v1/submit", "/v1/settle", "/v1/enqueue", "/v1/lines/q"):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:300])
        error_of(response)


def test_unknown_path_and_method_are_json(client: httpx.Client) -> None:
    """Paths and methods the gateway does not serve are JSON errors too."""
    response = client.get("/admin/<b>")
    assert response.status_code == 404
    error_of(response)
    response = client.delete("/v1/stats")
    assert response.status_code == 405
    error_of(response)


def test_unreachable_backend_is_503_without_traceback(tmp_path: Path) -> None:
    """A gateway whose backend is down answers 503 in JSON, naming no internals."""
    pytest.importorskip("jobchain_redis")
    port = _closed_port()
    log = tmp_path / "serve.log"
    gateway = GatewayProcess(
        log, ["--backend", f"redis-lists://127.0.0.1:{port}/0", "--token", TOKEN], process_env()
    )
    try:
        response = httpx.get(f"{gateway.url}/v1/stats", headers=AUTH, timeout=60)
        assert response.status_code == 503
        assert error_of(response)["code"] == "backend_unavailable"
    finally:
        gateway.stop()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_refuses_a_public_address_without_a_token() -> None:
    """`serve --bind 0.0.0.0:…` without a token exits with an error instead of serving the world."""
    done = forkserver.run(
        [sys.executable, "-m", "jobchain", "http", "serve", "--bind", "0.0.0.0:0"],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "refusing to serve 0.0.0.0 without a token" in done.stderr
    assert "Traceback" not in done.stderr


def test_served_openapi_document_is_the_one_in_the_repo(gateway: GatewayProcess) -> None:
    """The document a default gateway serves is plugins/http/jobchain_http/openapi.json, kept in the repo."""
    kept = json.loads((ROOT / "plugins" / "http" / "jobchain_http" / "openapi.json").read_text())
    served = httpx.get(f"{gateway.url}/openapi.json").json()
    assert served == kept
