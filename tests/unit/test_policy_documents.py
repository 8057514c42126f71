"""Policy documents: parsing APIM's XML (raw C# in attributes included), scopes, <base /> merging, load errors."""

from __future__ import annotations

import pytest

from policies.document import DEFAULT_DOCUMENT, Scope, load_document
from policies.errors import PolicyLoadError
from policies.policy_set import PolicySet, compile_policy_set
from policies.statement import Loader
from policies.xml import escape_expressions, parse

LOADER = Loader(named_values={"tenant": "contoso"}, backend_ids=frozenset({"primary"}))


def doc(inbound: str = "<base />", backend: str = "<base />", outbound: str = "<base />", on_error: str = "<base />") -> str:
    return (
        f"<policies><inbound>{inbound}</inbound><backend>{backend}</backend><outbound>{outbound}</outbound><on-error>{on_error}</on-error></policies>"
    )


def variable(name: str) -> str:
    return f'<set-variable name="{name}" value="1" />'


def names(statements: tuple) -> list[str]:
    return [s.name if hasattr(s, "name") and isinstance(s.name, str) else s.element for s in statements]


def test_raw_csharp_in_attributes_and_text_is_accepted() -> None:
    xml = (
        '<policies><inbound><set-variable name="u" value="@(context.Request.Headers.GetValueOrDefault("x-user-id", "N/A"))" />'
        '<set-variable name="small" value="@(context.Variables.GetValueOrDefault<int>("n", 0) < 5)" />'
        '<set-header name="x" exists-action="override"><value>@(1 < 2 && "a" != "b")</value></set-header>'
        "</inbound></policies>"
    )
    document = load_document(xml, Scope("api", "openai"), LOADER)
    assert len(document.sections["inbound"]) == 3


def test_escaping_keeps_already_escaped_entities_and_line_numbers() -> None:
    text = 'a="@(x == &quot;y&quot;)"\nb="@("q" + \'c\')"'
    escaped = escape_expressions(text)
    assert escaped.count("\n") == 1
    assert "&quot;y&quot;" in escaped and "&amp;quot;" not in escaped
    assert "@(&quot;q&quot; + &apos;c&apos;)" in escaped


def test_comments_with_at_signs_are_left_alone() -> None:
    root = parse("<policies><!-- call @(me) maybe --><inbound /></policies>")
    assert root.tag == "policies"


@pytest.mark.parametrize(
    ("xml", "message", "line"),
    [
        ("<policies>\n<inbound>\n<no-such-policy />\n</inbound></policies>", "<no-such-policy> at line 3: Unknown policy element", 3),
        ('<policies>\n<inbound>\n<set-variable name="x" value="1" colour="red" />\n</inbound></policies>', "Unknown attribute 'colour'", 3),
        ('<policies><inbound>\n<set-variable value="1" />\n</inbound></policies>', "Attribute 'name' is required", 2),
        (
            '<policies><inbound>\n\n<set-header name="a" exists-action="sometimes"><value>x</value></set-header></inbound></policies>',
            "use one of override, skip, append, delete",
            3,
        ),
        ('<policies><inbound>\n<set-variable name="x" value="@(context.Request.Nope)" />\n</inbound></policies>', "Nope", 2),
        ("<policies><inbound>\n<forward-request />\n</inbound></policies>", "Not allowed in <inbound>", 2),
        ("<policies><inbound /><inbound /></policies>", "Section appears twice", 1),
        ("<policies><middle /></policies>", "Unknown section", 1),
        ("<policy />", "root element must be <policies>", 1),
        ("<policies><inbound><base /><base /></inbound></policies>", "once per section", 1),
        (
            '<policies><inbound>\n<set-backend-service backend-id="elsewhere" /></inbound></policies>',
            "Unknown backend-id 'elsewhere'; configured: primary",
            2,
        ),
        ('<policies><inbound>\n<set-variable name="x" value="{{missing}}" /></inbound></policies>', "Named value 'missing'", 2),
        ('<policies><inbound>\n<choose><otherwise /><when condition="@(true)" /></choose></inbound></policies>', "last branch", 2),
        ('<policies><backend>\n<retry condition="@(true)" count="99" interval="0"><forward-request /></retry></backend></policies>', "at most 50", 2),
        ("<policies><inbound>\n<set-variable name='x' value='1'>\n</policies>", "Malformed XML", None),
    ],
)
def test_load_errors_name_element_and_line(xml: str, message: str, line: int | None) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        load_document(xml, Scope("api", "openai"), LOADER)
    assert message in str(caught.value)
    if line is not None:
        assert caught.value.line == line


@pytest.mark.parametrize(
    "xml",
    [
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><policies>&lol2;</policies>',
        '<!DOCTYPE policies [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><policies><inbound>&xxe;</inbound></policies>',
        '<!DOCTYPE policies SYSTEM "http://example.invalid/p.dtd"><policies />',
    ],
)
def test_xml_bombs_and_external_entities_are_refused(xml: str) -> None:
    with pytest.raises(PolicyLoadError, match="DTDs and entities are not allowed"):
        load_document(xml, Scope("global"), LOADER)


def test_oversized_document_is_refused_before_parsing() -> None:
    with pytest.raises(PolicyLoadError, match="at most"):
        load_document("<policies>" + " " * 300_000 + "</policies>", Scope("global"), LOADER)


def policy_set(documents: dict[str, str]) -> PolicySet:
    return compile_policy_set(documents, 1, LOADER)


def test_base_inlines_parent_section_across_all_four_scopes() -> None:
    documents = {
        "global": doc(inbound=variable("g1") + "<base />" + variable("g2")),
        "product:gold": doc(inbound=variable("p1") + "<base />"),
        "api:openai": doc(inbound="<base />" + variable("a1")),
        "operation:ChatCompletions_Create": doc(inbound=variable("o1") + "<base />" + variable("o2")),
    }
    pipeline = policy_set(documents).pipeline("gold", "openai", "ChatCompletions_Create")
    assert names(pipeline.inbound) == ["o1", "p1", "g1", "g2", "a1", "o2"]
    assert names(pipeline.backend) == ["forward-request"]  # global's <base /> keeps the built-in forwarding


def test_section_without_base_drops_what_it_would_inherit() -> None:
    documents = {"global": doc(inbound=variable("g")), "api:openai": doc(inbound=variable("a"), outbound=variable("out"))}
    pipeline = policy_set(documents).pipeline(None, "openai", "ChatCompletions_Create")
    assert names(pipeline.inbound) == ["a"]
    assert names(pipeline.outbound) == ["out"]


def test_absent_section_and_absent_scope_inherit_unchanged() -> None:
    documents = {"global": doc(inbound=variable("g")), "api:openai": "<policies><outbound /></policies>"}
    other_product = policy_set(documents).pipeline("silver", "openai", "embeddings_create")
    assert names(other_product.inbound) == ["g"]
    assert names(other_product.outbound) == []


def test_product_document_applies_only_to_its_product() -> None:
    documents = {"product:gold": doc(inbound="<base />" + variable("gold-only"))}
    policies = policy_set(documents)
    assert names(policies.pipeline("gold", "openai", "x").inbound) == ["gold-only"]
    assert names(policies.pipeline(None, "openai", "x").inbound) == []


def test_operation_document_applies_only_to_its_operation() -> None:
    documents = {"operation:embeddings_create": doc(inbound=variable("emb"))}
    policies = policy_set(documents)
    assert names(policies.pipeline(None, "openai", "embeddings_create").inbound) == ["emb"]
    assert names(policies.pipeline(None, "openai", "ChatCompletions_Create").inbound) == []


def test_effective_document_prints_as_xml() -> None:
    documents = {"api:openai": doc(inbound='<set-variable name="x" value="@(context.Api.Id)" /><base />')}
    xml = policy_set(documents).pipeline(None, "openai", "ChatCompletions_Create").to_xml()
    reparsed = load_document(xml, Scope("global"), LOADER)
    assert [type(s).__name__ for s in reparsed.sections["inbound"]] == ["SetVariable"]
    assert "<forward-request" in xml


@pytest.mark.parametrize("text", ["global", "product:gold", "api:openai", "operation:ChatCompletions_Create"])
def test_scope_round_trips(text: str) -> None:
    assert str(Scope.parse(text)) == text


@pytest.mark.parametrize("text", ["", "global:x", "product", "tenant:x", "api:"])
def test_bad_scope_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="Invalid scope"):
        Scope.parse(text)


def test_default_document_forwards() -> None:
    default = load_document(DEFAULT_DOCUMENT, Scope("global"), LOADER)
    assert [s.element for s in default.sections["backend"]] == ["forward-request"]  # type: ignore[union-attr]
