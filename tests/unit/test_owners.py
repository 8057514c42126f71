"""Subscription owners: bounded fields, stored on the subscription row, read by policies as `context.User`;
and `context.Api` built from the backends."""

from __future__ import annotations

import json

import pytest

from gateway.backends.config import parse_backends
from gateway.backends.registry import BackendRegistry
from gateway.handling.context_parts import api_contexts, user_of
from gateway.stores.memory import MemoryTables
from gateway.stores.owners import MAX_GROUPS, make_owner
from gateway.stores.subscriptions import KeyHasher, SubscriptionRepository
from policies.expressions import compile_value
from tests.policy_helpers import make_context


def test_an_owner_defaults_its_id_to_the_email_and_splits_the_name() -> None:
    owner = make_owner(None, " ada@contoso.com ", "  Ada   King Lovelace ", groups=["researchers", "researchers", " admins "])
    assert (owner.id, owner.email, owner.first_name, owner.last_name) == ("ada@contoso.com", "ada@contoso.com", "Ada", "King Lovelace")
    assert owner.groups == ("researchers", "admins") and owner.registered.endswith("+00:00")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"owner_id": None}, "needs an id or an email"),
        ({"owner_id": None, "email": "not-an-email"}, "is not an email address"),
        ({"owner_id": None, "email": "a@b.c\r\nx-injected: 1"}, "is not an email address"),
        ({"owner_id": "a/b"}, "Owner id 'a/b'"),
        ({"owner_id": "u1", "name": "Ada\x00"}, "no control characters"),
        ({"owner_id": "u1", "note": "n" * 1001}, "at most 1000 characters"),
        ({"owner_id": "u1", "groups": ["a,b"]}, "Owner group 'a,b'"),
        ({"owner_id": "u1", "groups": [f"g{i}" for i in range(MAX_GROUPS + 1)]}, f"at most {MAX_GROUPS} groups"),
    ],
)
def test_owner_fields_are_bounded(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_owner(**arguments)


async def test_the_owner_is_stored_changed_and_removed_with_the_subscription(memory_tables: MemoryTables) -> None:
    repo = SubscriptionRepository(memory_tables.table("subscriptions"), KeyHasher("p" * 16))
    owner = make_owner("u1", "ada@contoso.com", "Ada Lovelace", "pilot", ["research"])
    sub, primary, _ = await repo.create("team", "all", "s1", owner)
    assert (await repo.get("s1")) == sub and sub.owner == owner
    assert sub.public_view()["owner"]["email"] == "ada@contoso.com"
    changed = await repo.set_owner("s1", make_owner("u1", "grace@contoso.com", registered=owner.registered))
    assert (await repo.find_by_key_hash(KeyHasher("p" * 16).hash(primary))) == changed
    assert changed.owner is not None and changed.owner.registered == owner.registered
    await repo.rotate("s1", "secondary")  # other writes keep the owner
    assert (await repo.get("s1")).owner == changed.owner  # type: ignore[union-attr]
    cleared = await repo.set_owner("s1", None)
    assert cleared.owner is None and "owner" not in cleared.public_view() and (await repo.get("s1")).owner is None  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        await repo.set_owner("missing", None)


async def test_policies_read_the_owner_as_context_user(memory_tables: MemoryTables) -> None:
    repo = SubscriptionRepository(memory_tables.table("subscriptions"), KeyHasher("p" * 16))
    sub, _, _ = await repo.create("team", "all", "s1", make_owner(None, "ada@contoso.com", "Ada Lovelace", groups=["research"]))
    context = make_context()
    context.User = user_of(sub)
    value = compile_value(
        '@(context.User.Email + "|" + context.User.FirstName + "|" + context.User.Groups.First().Id + "|" + context.User.RegistrationDate.Year)', {}
    )
    assert value.evaluate(context).startswith("ada@contoso.com|Ada|research|20")
    assert user_of(None) is None and user_of((await repo.create("anonymous", "all"))[0]) is None


@pytest.mark.parametrize(
    ("backends", "service_url"),
    [
        ([{"id": "a", "url": "https://one.openai.azure.com"}], "https://one.openai.azure.com/openai"),
        (
            [
                {"id": "a", "url": "https://one.openai.azure.com"},
                {"id": "b", "url": "http://127.0.0.1:9000"},
                {"id": "p", "type": "pool", "deployments": ["*"], "pool": {"services": [{"id": "b"}, {"id": "a"}]}},
            ],
            "http://127.0.0.1:9000/openai",
        ),
        ([], None),
    ],
)
def test_the_api_context_names_the_default_backend(backends: list, service_url: str | None) -> None:
    apis = api_contexts(BackendRegistry(parse_backends({"GATEWAY_BACKENDS": json.dumps(backends)} if backends else {})))
    versioned, v1 = apis["openai"], apis["openai-v1"]
    assert (versioned.Path, v1.Path, versioned.Revision, v1.Name) == ("openai", "openai/v1", "1", "Azure OpenAI v1")
    assert (versioned.ServiceUrl.ToString() if versioned.ServiceUrl else None) == service_url
    if service_url:
        assert v1.ServiceUrl is not None and v1.ServiceUrl.ToString() == service_url + "/v1"
