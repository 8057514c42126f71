"""`include-fragment`: a `<fragment>` document's statements inlined at load, with cycles and unknown ids refused."""

from __future__ import annotations

import pytest

from policies.document import Scope, load_document
from policies.errors import PolicyLoadError
from policies.statement import Loader
from tests.policy_helpers import doc, make_context, pipeline_of

FRAGMENTS = {
    "route": '<fragment>\n<set-backend-service backend-id="secondary" />\n<include-fragment fragment-id="tag" />\n</fragment>',
    "tag": '<fragment><set-header name="x-tagged" exists-action="override"><value>@(context.Api.Id)</value></set-header></fragment>',
}


def loader(**fragments: str) -> Loader:
    return Loader(backend_ids=frozenset({"primary", "secondary"}), fragments={**FRAGMENTS, **fragments})


async def test_fragment_statements_run_where_the_fragment_is_included() -> None:
    pipeline = pipeline_of(doc(inbound='<include-fragment fragment-id="route" /><set-variable name="after" value="1" />'), loader())
    assert [statement.element for statement in pipeline.inbound] == ["set-backend-service", "set-header", "set-variable"]
    assert '<set-header name="x-tagged"' in pipeline.to_xml()
    context = make_context()
    await pipeline.execute(context)
    assert context.backend_id == "secondary" and context.Request.Headers.GetValueOrDefault("x-tagged") == "openai"


def load_error(xml: str, used: Loader) -> PolicyLoadError:
    with pytest.raises(PolicyLoadError) as caught:
        load_document(xml, Scope("api", "openai"), used)
    return caught.value


def test_unknown_fragment_names_the_known_ones() -> None:
    error = load_error(doc(inbound='\n<include-fragment fragment-id="nope" />'), loader())
    assert (error.element, error.line) == ("include-fragment", 2)
    assert "Unknown fragment 'nope'; known fragments: route, tag." in str(error)


def test_cycles_are_refused_with_the_chain() -> None:
    cyclic = loader(a='<fragment><include-fragment fragment-id="b" /></fragment>', b='<fragment><include-fragment fragment-id="a" /></fragment>')
    error = load_error(doc(inbound='<include-fragment fragment-id="a" />'), cyclic)
    assert "Fragment 'a' includes itself: a → b → a." in str(error)


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        (
            '<fragment>\n\n<set-header name="x" exists-action="sometimes"><value>v</value></set-header></fragment>',
            "In fragment 'bad': <set-header> at line 3",
        ),
        ("<policies><inbound /></policies>", "root element of a fragment must be <fragment>"),
        ("<fragment><base /></fragment>", "no sections and no <base />"),
        ("<fragment><forward-request /></fragment>", "Not allowed in <inbound>"),
    ],
)
def test_problems_inside_a_fragment_name_the_fragment(fragment: str, message: str) -> None:
    error = load_error(doc(inbound='<include-fragment fragment-id="bad" />'), loader(bad=fragment))
    assert error.element == "include-fragment" and message in str(error)


def test_a_fragment_may_be_included_in_any_section_its_statements_allow() -> None:
    backend = loader(forward='<fragment><forward-request timeout="5" /></fragment>')
    pipeline = pipeline_of(doc(backend='<include-fragment fragment-id="forward" />'), backend)
    assert [statement.element for statement in pipeline.backend] == ["forward-request"]
