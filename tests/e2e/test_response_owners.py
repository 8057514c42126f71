"""Responses API ids are bound to the subscription that created them: two tenants through the real stack (Azurite,
the simulator, gateway processes, the openai SDK); only the creator reads, continues or deletes a response."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from gateway.dev import devstack
from gateway.stores.response_owners import TABLE
from tests.conftest import GatewayProcess, Keys, Simulator
from tests.stack_helpers import FailingTableProxy, logged_gateway, token_env


@dataclass(frozen=True)
class Tenants:
    env: dict[str, str]
    gateways: list[GatewayProcess]
    alice: str
    bob: str


@pytest.fixture(scope="module")
def tenants(
    start_gateway: Callable[[dict[str, str]], GatewayProcess], gateway_env: dict[str, str], create_subscription: Callable[..., Keys]
) -> Tenants:
    env = token_env(gateway_env)
    gateways = [start_gateway(env), start_gateway(env)]
    return Tenants(env, gateways, create_subscription("alice", env=env).primary, create_subscription("bob", env=env).primary)


def sdk(gateway: GatewayProcess | str, key: str) -> OpenAI:
    url = gateway if isinstance(gateway, str) else gateway.url
    return OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0)


def test_only_the_creator_reads_continues_and_deletes_a_response(tenants: Tenants) -> None:
    here, there = tenants.gateways
    alice, bob = sdk(here, tenants.alice), sdk(here, tenants.bob)
    created = alice.responses.create(model="gpt-4o", input="my secret plan")
    assert alice.responses.retrieve(created.id).id == created.id
    assert sdk(there, tenants.alice).responses.retrieve(created.id).id == created.id  # recorded for every instance
    for other in (bob, sdk(there, tenants.bob)):
        with pytest.raises(openai.NotFoundError, match=f"Response with id '{created.id}' not found"):
            other.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError, match="Previous response"):
            other.responses.create(model="gpt-4o", input="and then?", previous_response_id=created.id)
    follow = alice.responses.create(model="gpt-4o", input="and then?", previous_response_id=created.id)
    assert follow.previous_response_id == created.id
    alice.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        alice.responses.retrieve(created.id)  # gone at the backend


def test_a_streamed_response_is_bound_from_its_created_event(tenants: Tenants) -> None:
    here, there = tenants.gateways
    with sdk(here, tenants.alice).responses.create(model="gpt-4o", input="stream it", stream=True) as stream:
        events = list(stream)
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    response_id = events[0].response.id
    assert sdk(here, tenants.alice).responses.retrieve(response_id).id == response_id
    assert sdk(there, tenants.alice).responses.retrieve(response_id).id == response_id
    with pytest.raises(openai.NotFoundError):
        sdk(there, tenants.bob).responses.retrieve(response_id)


def test_an_id_the_gateway_did_not_create_belongs_to_no_one(tenants: Tenants, simulator: Simulator) -> None:
    direct = httpx.post(f"{simulator.url}/openai/v1/responses", headers={"api-key": simulator.api_key}, json={"model": "gpt-4o", "input": "x"})
    response_id = direct.json()["id"]
    for key in (tenants.alice, tenants.bob):
        with pytest.raises(openai.NotFoundError):
            sdk(tenants.gateways[0], key).responses.retrieve(response_id)


@pytest.fixture
def owners_down(azurite: devstack.AzuritePorts) -> Iterator[FailingTableProxy]:
    with FailingTableProxy(azurite.table, TABLE) as proxy:
        yield proxy


def test_storage_down_fails_closed_for_ids_this_instance_does_not_know(
    tenants: Tenants, azurite: devstack.AzuritePorts, owners_down: FailingTableProxy, tmp_path: Path
) -> None:
    elsewhere = sdk(tenants.gateways[0], tenants.alice).responses.create(model="gpt-4o", input="made elsewhere")
    connection = tenants.env["GATEWAY_STORAGE_CONNECTION"].replace(f":{azurite.table}/", f":{owners_down.port}/")
    with logged_gateway({**tenants.env, "GATEWAY_STORAGE_CONNECTION": connection}, tmp_path / "gateway.log") as url:
        alice, bob = sdk(url, tenants.alice), sdk(url, tenants.bob)
        alice.models.list(), bob.models.list()  # keys verified here before storage starts failing
        with pytest.raises(openai.APIStatusError) as refused:
            alice.responses.retrieve(elsewhere.id)
        assert refused.value.status_code == 503
        assert refused.value.response.json()["error"]["code"] == "StorageUnavailable"
        assert refused.value.response.headers["retry-after"]
        made_here = alice.responses.create(model="gpt-4o", input="made while the table is down")
        assert alice.responses.retrieve(made_here.id).id == made_here.id  # this instance remembers its owner
        with pytest.raises(openai.NotFoundError):
            bob.responses.retrieve(made_here.id)
    assert owners_down.refused > 0
    assert f"Could not record the owner of response {made_here.id}" in (tmp_path / "gateway.log").read_text()
