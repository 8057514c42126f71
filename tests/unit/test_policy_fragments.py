"""Policy fragments in the store: validated against what includes them, never deleted from under a document,
resolved when a gateway loads its set, and reloaded when they change."""

from __future__ import annotations

import asyncio
import types

import pytest

from gateway.handling.operations import check_policy_scope
from gateway.stores.memory import MemoryTables
from gateway.stores.policies import PolicyManager, PolicyRepository, apply_document, apply_fragment, delete_fragment
from gateway.stores.policy_updates import Fragment, apply_blob, apply_message, target_from_blob_name
from policies.document import Scope
from policies.errors import PolicyLoadError
from policies.statement import Loader
from policies.statements.include_fragment import MAX_EXPANDED_ELEMENTS

LOADER = Loader(backend_ids=frozenset({"primary"}))
TAG = '<fragment><set-header name="x-tag" exists-action="override"><value>{}</value></set-header></fragment>'
INCLUDING = '<policies><inbound><base /><include-fragment fragment-id="tag" /></inbound></policies>'


@pytest.fixture
def repository(memory_tables: MemoryTables) -> PolicyRepository:
    return PolicyRepository(memory_tables.table("policies"))


async def test_fragments_are_stored_beside_documents_and_bump_the_version(repository: PolicyRepository) -> None:
    version, sections = await apply_fragment(repository, "tag", TAG.format("one"), LOADER)
    assert version == 1 and sections == ("inbound", "backend", "outbound", "on-error")
    assert await repository.fragments() == {"tag": TAG.format("one")}
    assert await repository.documents() == {}
    assert await apply_document(repository, Scope("api", "openai"), INCLUDING, LOADER) == 2
    assert await repository.fragment("tag") == TAG.format("one")
    assert await delete_fragment(repository, "missing") is None


async def test_a_document_is_validated_with_the_stored_fragments(repository: PolicyRepository) -> None:
    with pytest.raises(PolicyLoadError, match="Unknown fragment 'tag'; known fragments: none defined"):
        await apply_document(repository, Scope("global"), INCLUDING, LOADER)
    assert await repository.version() == 0


async def test_a_fragment_that_would_break_an_including_document_is_refused(repository: PolicyRepository) -> None:
    await apply_fragment(repository, "tag", TAG.format("one"), LOADER)
    await apply_document(repository, Scope("api", "openai"), INCLUDING, LOADER)
    with pytest.raises(PolicyLoadError, match=r"what includes it would no longer load: Policy for scope api:openai: .*Not allowed in <inbound>"):
        await apply_fragment(repository, "tag", "<fragment><forward-request /></fragment>", LOADER)
    assert await repository.fragment("tag") == TAG.format("one")
    assert await repository.version() == 2


async def test_a_fragment_is_checked_through_the_fragments_that_include_it(repository: PolicyRepository) -> None:
    await apply_fragment(repository, "tag", TAG.format("one"), LOADER)
    await apply_fragment(repository, "outer", '<fragment><include-fragment fragment-id="tag" /></fragment>', LOADER)
    await apply_document(repository, Scope("global"), '<policies><inbound><include-fragment fragment-id="outer" /></inbound></policies>', LOADER)
    with pytest.raises(
        PolicyLoadError, match="scope global: <include-fragment> at line 1: In fragment 'tag': <forward-request> at line 1: Not allowed in <inbound>"
    ):
        await apply_fragment(repository, "tag", "<fragment><forward-request /></fragment>", LOADER)
    with pytest.raises(PolicyLoadError, match="Fragment 'tag' includes itself: tag → outer → tag"):
        await apply_fragment(repository, "tag", '<fragment><include-fragment fragment-id="outer" /></fragment>', LOADER)


@pytest.mark.parametrize(
    ("fragment_id", "xml", "message"),
    [
        ("bad/id", TAG.format("x"), "Invalid fragment id 'bad/id'"),
        ("-dash", TAG.format("x"), "Invalid fragment id"),
        ("x" * 81, TAG.format("x"), "Invalid fragment id"),
        ("ok", "<policies />", "root element of a fragment must be <fragment>"),
        (
            "ok",
            "<fragment><forward-request /><set-header name='a' exists-action='delete' /><include-fragment fragment-id='ok' /></fragment>",
            "includes itself",
        ),
        (
            "mixed",
            "<fragment><forward-request /><check-header name='a' failed-check-httpcode='401' failed-check-error-message='no' ignore-case='true' /></fragment>",
            "fit no one section: in <inbound>:",
        ),
    ],
)
async def test_invalid_fragments_are_refused_and_nothing_is_written(repository: PolicyRepository, fragment_id: str, xml: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await apply_fragment(repository, fragment_id, xml, LOADER)
    assert await repository.version() == 0


async def test_an_included_fragment_cannot_be_deleted(repository: PolicyRepository) -> None:
    await apply_fragment(repository, "tag", TAG.format("one"), LOADER)
    await apply_fragment(repository, "outer", '<fragment><include-fragment fragment-id="tag" /></fragment>', LOADER)
    await apply_document(repository, Scope("api", "openai"), INCLUDING, LOADER)
    with pytest.raises(ValueError, match="Fragment 'tag' is included by scope api:openai, fragment 'outer': remove those includes first"):
        await delete_fragment(repository, "tag")
    await repository.delete(Scope("api", "openai"))
    await delete_fragment(repository, "outer")
    assert await delete_fragment(repository, "tag") == 6
    assert await repository.fragments() == {}


async def test_a_fragment_change_reloads_the_policy_set(repository: PolicyRepository) -> None:
    await apply_fragment(repository, "tag", TAG.format("one"), LOADER)
    await apply_document(repository, Scope("api", "openai"), INCLUDING, LOADER)
    manager = PolicyManager(repository, LOADER, poll_seconds=0.01)
    await manager.start()
    try:
        assert _tag_value(manager) == "one"
        await apply_fragment(repository, "tag", TAG.format("two"), LOADER)
        for _ in range(200):
            if manager.current.version == 3:
                break
            await asyncio.sleep(0.01)
        assert _tag_value(manager) == "two"
    finally:
        await manager.close()


def _tag_value(manager: PolicyManager) -> str:
    statement = manager.current.pipeline(None, "openai", "ChatCompletions_Create").inbound[0]
    assert statement.node is not None
    return str(statement.node.find("value").text)  # type: ignore[union-attr]


async def test_fragments_multiplying_a_document_are_bounded(repository: PolicyRepository) -> None:
    wide = "<fragment>" + '<include-fragment fragment-id="tag" />' * 50 + "</fragment>"
    await apply_fragment(repository, "tag", TAG.format("x"), LOADER)
    await apply_fragment(repository, "wide", wide, LOADER)
    wider = "<fragment>" + '<include-fragment fragment-id="wide" />' * 100 + "</fragment>"
    with pytest.raises(PolicyLoadError, match=f"more than {MAX_EXPANDED_ELEMENTS:,} elements"):
        await apply_fragment(repository, "wider", wider, LOADER)


def _gateway(repository: PolicyRepository) -> types.SimpleNamespace:
    return types.SimpleNamespace(policy_repository=repository, loader=LOADER, settings=types.SimpleNamespace(products={"gold": ("openai",)}))


async def test_queue_messages_and_blobs_apply_and_delete_fragments(repository: PolicyRepository) -> None:
    gateway = _gateway(repository)
    assert await apply_message(gateway, '{"fragment": "tag", "xml": "<fragment />"}') == 1  # type: ignore[arg-type]
    assert await apply_blob(gateway, "policies/fragments/other.xml", TAG.format("b").encode()) == 2  # type: ignore[arg-type]
    assert set(await repository.fragments()) == {"tag", "other"}
    assert await apply_message(gateway, '{"fragment": "tag", "delete": true}') == 3  # type: ignore[arg-type]
    assert await apply_message(gateway, '{"fragment": 7, "xml": "<fragment />"}') is None  # type: ignore[arg-type]
    assert await apply_message(gateway, '{"fragment": "../x", "xml": "<fragment />"}') is None  # type: ignore[arg-type]
    assert set(await repository.fragments()) == {"other"}


async def test_queue_messages_for_scopes_no_request_can_match_are_rejected(repository: PolicyRepository) -> None:
    gateway = _gateway(repository)
    assert await apply_message(gateway, '{"scope": "api:opnai", "xml": "<policies />"}') is None  # type: ignore[arg-type]
    assert await apply_blob(gateway, "products/silver.xml", b"<policies />") is None  # type: ignore[arg-type]
    assert await apply_blob(gateway, "products/gold.xml", b"<policies />") == 1  # type: ignore[arg-type]
    assert await repository.documents() == {"product:gold": "<policies />"}


@pytest.mark.parametrize(
    ("name", "target"),
    [("fragments/auth.xml", Fragment("auth")), ("policies/apis/openai.xml", Scope("api", "openai")), ("global.xml", Scope("global"))],
)
def test_blob_names_map_to_scopes_and_fragments(name: str, target: object) -> None:
    assert target_from_blob_name(name) == target


@pytest.mark.parametrize(
    ("scope", "products", "message"),
    [
        ("api:opnai", None, "Unknown API 'opnai' in scope 'api:opnai': no request can match it. Did you mean api:openai?"),
        ("operation:ChatCompletion_Create", None, "Did you mean operation:ChatCompletions_Create?"),
        ("product:gld", ("gold",), "Did you mean product:gold? Known (from GATEWAY_PRODUCTS): gold."),
        ("product:gold", (), "Known (from GATEWAY_PRODUCTS): none."),
        ("operation:zzzz", None, "no request can match it. Known: ChatCompletions_Create,"),
    ],
)
def test_scopes_no_request_can_match_are_refused_with_a_suggestion(scope: str, products: tuple[str, ...] | None, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_policy_scope(Scope.parse(scope), products)
    assert message in str(caught.value)


@pytest.mark.parametrize("scope", ["global", "api:openai-v1", "operation:createResponse", "product:gold", "product:anything"])
def test_known_scopes_pass(scope: str) -> None:
    check_policy_scope(Scope.parse(scope), ("gold",) if scope != "product:anything" else None)
