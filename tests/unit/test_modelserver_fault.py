"""The local model servers' fault switch (localenv/modelserver/fault.py): `POST /admin/fault`
makes a server fail a share of its inference requests, as the sandbox's incident scene needs.
The server runs in-process, called through httpx's ASGI transport, its model trained as in the real
process."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest
from starlette.applications import Starlette

from localenv.modelserver.app import build_app
from localenv.modelserver.dataset import load_dataset
from localenv.modelserver.fault import FaultSwitch
from localenv.modelserver.variants import DEFAULT_MODEL_NAME, STANDARD_INPUT, Variant, train

INFER = f"/v2/models/{DEFAULT_MODEL_NAME}/infer"


class InProcessServer:
    """The model server's app, called in this process as a client would call it over HTTP."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def request(self, method: str, path: str, *, json: object = None) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                return await client.request(method, path, json=json)

        return asyncio.run(call())

    def post(self, path: str, *, json: object) -> httpx.Response:
        return self.request("POST", path, json=json)

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)


@pytest.fixture
def server() -> InProcessServer:
    return InProcessServer(build_app(model=train(Variant.BETTER), model_name=DEFAULT_MODEL_NAME, version="v5"))


def infer(server: InProcessServer, count: int) -> list[httpx.Response]:
    row = load_dataset().test_features[0].tolist()
    tensor = {**STANDARD_INPUT.as_json(), "shape": [1, len(row)], "data": row}
    return [server.post(INFER, json={"id": f"r{n}", "inputs": [tensor]}) for n in range(count)]


def errors_counted(server: InProcessServer) -> float:
    metrics = server.get("/metrics").text
    return sum(
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("model_request_errors_total")
    )


def test_given_a_share_when_requests_arrive_then_exactly_that_share_fails_never_two_in_a_row() -> None:
    switch = FaultSwitch()
    switch.set(0.3)

    fails = [switch.fails_next() for _ in range(100)]

    assert sum(fails) == 30
    assert max(len(list(run)) for failed, run in itertools.groupby(fails) if failed) == 1


def test_given_the_switch_off_then_no_request_fails() -> None:
    assert not any(FaultSwitch().fails_next() for _ in range(1000))


def test_given_a_server_when_the_fault_is_switched_on_then_that_share_of_inference_fails_and_is_counted(
    server: InProcessServer,
) -> None:
    errors_before = errors_counted(server)

    switched = server.post("/admin/fault", json={"errorRate": 0.5})
    answers = infer(server, 10)

    assert switched.status_code == 200 and switched.json() == {"errorRate": 0.5}
    assert [a.status_code for a in answers] == [200, 500] * 5
    assert all("injected fault: failing 50%" in a.json()["error"] for a in answers if a.status_code == 500)
    assert errors_counted(server) - errors_before == 5, "what Prometheus reads as the error rate"

    # when it is switched off, every request is answered again
    assert server.post("/admin/fault", json={"errorRate": 0}).json() == {"errorRate": 0.0}
    assert [a.status_code for a in infer(server, 10)] == [200] * 10
    assert server.get("/admin/fault").json() == {"errorRate": 0.0}


@pytest.mark.parametrize("body", [{"errorRate": 1.5}, {"errorRate": "0.3"}, {"errorRate": True}, {}, [0.3]])
def test_given_a_share_that_is_no_share_then_it_is_refused_naming_the_field_and_nothing_changes(
    server: InProcessServer, body: object
) -> None:
    refused = server.post("/admin/fault", json=body)

    assert refused.status_code == 400
    assert "errorRate must be a number from 0 to 1" in refused.json()["error"]
    assert server.get("/admin/fault").json() == {"errorRate": 0.0}
