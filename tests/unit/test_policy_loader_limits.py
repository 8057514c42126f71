"""Load-time bounds and the former loader crashes: nesting, sizes and counts are refused with PolicyLoadError by
the parser and compiler themselves (never by Python's stack), compile cost is linear, and a document that
loads somewhere loads anywhere with a few hundred frames of stack to spare."""

from __future__ import annotations

import inspect
import random
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from policies.document import Scope, load_document
from policies.errors import PolicyLoadError
from policies.expressions import ExpressionError, compile_block, compile_expression
from policies.expressions._limits import MAX_BLOCK_STATEMENTS, MAX_EXPRESSION_CHARS, MAX_NESTING
from policies.statement import Loader
from policies.xml import MAX_DOCUMENT_CHARS, MAX_XML_DEPTH, MAX_XML_ELEMENTS
from tests.policy_helpers import make_context, pipeline_of

#: The stack a document at every bound needs, loaded and run (stated in the loader's docstrings).
STACK_HEADROOM = 500


def load(xml: str) -> Any:
    return load_document(xml, Scope("global"), Loader())


def attribute(expression: str) -> str:
    """A one-statement document whose value is `expression` (escaped the way a careful author would)."""
    escaped = expression.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    return f'<policies><inbound><set-variable name="v" value="{escaped}" /></inbound></policies>'


def nested(kind: str, depth: int) -> str:
    """An expression nesting `depth` levels of one construct."""
    inner = depth - 1
    return {
        "parentheses": "(" * inner + "1" + ")" * inner,
        "calls": "Math.Abs(" * inner + "1" + ")" * inner,
        "holes": '$"{' * inner + "1" + '}"' * inner,
        "initialisers": "new JArray { " * inner + "1" + " }" * inner,
    }[kind]


@pytest.mark.parametrize("kind", ["parentheses", "calls", "holes", "initialisers"])
def test_expression_nesting_bound(kind: str) -> None:
    compile_expression(nested(kind, MAX_NESTING))
    with pytest.raises(ExpressionError, match=f"more than {MAX_NESTING}"):
        compile_expression(nested(kind, MAX_NESTING + 2))


def test_block_nesting_bound() -> None:
    compile_block("{" * (MAX_NESTING - 1) + "return 1;" + "}" * (MAX_NESTING - 1))
    with pytest.raises(ExpressionError, match=f"more than {MAX_NESTING}"):
        compile_block("{" * (MAX_NESTING + 1) + "return 1;" + "}" * (MAX_NESTING + 1))
    with pytest.raises(ExpressionError, match=f"more than {MAX_NESTING}"):
        compile_block("if (true) " * (MAX_NESTING + 1) + "return 1; return 0;")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (" + ".join(["1"] * 5000), 5000),
        ("!" * 950 + "true", True),
        ("!" * 951 + "true", False),
        (" - ".join(["1"] * 3000), -2998),
        (" && ".join(["true"] * 3000), True),
        (" ?? ".join(["null"] * 2000) + ' ?? "last"', "last"),
        ("".join(f"{i} == 1000 ? {i} : " for i in range(1000)) + "-1", -1),
        ("".join(f"{i} == 500 ? {i} : " for i in range(1000)) + "-1", 500),
        ("(int)(long)(int)" * 300 + "1", 1),
    ],
)
def test_long_chains_do_not_nest(source: str, expected: Any) -> None:
    with headroom(STACK_HEADROOM):
        assert compile_expression(source).evaluate(make_context()) == expected


def test_expression_length_bound() -> None:
    near = " + ".join(["1"] * ((MAX_EXPRESSION_CHARS - 10) // 4))
    assert len(near) <= MAX_EXPRESSION_CHARS
    compile_expression(near)
    with pytest.raises(ExpressionError, match=f"at most {MAX_EXPRESSION_CHARS:,}"):
        compile_expression(near + " + 1" * 10)


def test_block_statement_bound() -> None:
    compile_block("var n = 0;" + " n++;" * (MAX_BLOCK_STATEMENTS - 2) + " return n;")
    with pytest.raises(ExpressionError, match=f"more than {MAX_BLOCK_STATEMENTS:,} statements"):
        compile_block("var n = 0;" + " n++;" * MAX_BLOCK_STATEMENTS + " return n;")


def choose_document(levels: int) -> str:
    opened = '<choose><when condition="@(true)">' * levels
    closed = "</when></choose>" * levels
    return f"<policies><inbound>{opened}<set-variable name='v' value='x' />{closed}</inbound></policies>"


def test_xml_depth_bound_and_500_nested_choose() -> None:
    levels = (MAX_XML_DEPTH - 3) // 2
    load(choose_document(levels))
    with pytest.raises(PolicyLoadError, match=f"nested more than {MAX_XML_DEPTH} levels"):
        load(choose_document(levels + 1))
    with pytest.raises(PolicyLoadError, match="nested more than"):
        load(choose_document(500))


def test_xml_element_and_document_size_bounds() -> None:
    statement = "<set-variable name='v' value='x' />"
    load(f"<policies><inbound>{statement * (MAX_XML_ELEMENTS - 2)}</inbound></policies>")
    with pytest.raises(PolicyLoadError, match=f"more than {MAX_XML_ELEMENTS:,} elements"):
        load(f"<policies><inbound>{statement * MAX_XML_ELEMENTS}</inbound></policies>")
    padding = "<!--" + "x" * MAX_DOCUMENT_CHARS + "-->"
    with pytest.raises(PolicyLoadError, match=f"at most {MAX_DOCUMENT_CHARS:,}"):
        load(f"<policies>{padding}</policies>")


@pytest.mark.parametrize(
    ("xml", "fragment"),
    [
        (attribute("@(" + "9" * 5000 + ")"), "too large"),
        (attribute("@(1e999)"), "outside the range of double"),
        (attribute("@(0x" + "F" * 40 + ")"), "too large"),
        ("<policies><inbound><rate-limit calls='" + "9" * 5000 + "' renewal-period='60' /></inbound></policies>", "calls"),
        (attribute("@(" + "(" * 120 + "1" + ")" * 120 + ")"), "nests more than"),
        (attribute("@(" + "Math.Abs(" * 80 + "1" + ")" * 80 + ")"), "nests more than"),
        (attribute("@(" + '$"{' * 80 + "1" + '}"' * 80 + ")"), "nested more than"),
        (attribute("@{" + "{" * 200 + "return 1;" + "}" * 200 + "}"), "nests more than"),
        ("<policies><inbound><x a='\ud800' /></inbound></policies>", "Malformed XML"),
        ("<policies><inbound><set-variable name='v' value='@(1' /></inbound></policies>", "Malformed XML"),
        ("<policies><inbound><set-variable name='v' value='@{ return 1; ' /></inbound></policies>", "Malformed XML"),
        ("<!DOCTYPE x [<!ENTITY a 'b'>]><policies />", "DTDs and entities are not allowed"),
    ],
)
def test_former_crashes_are_load_errors(xml: str, fragment: str) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        load(xml)
    assert fragment in str(caught.value)
    assert "set_int_max_str_digits" not in str(caught.value) and "Traceback" not in str(caught.value)


def test_950_nested_not_loads_and_runs_with_little_stack() -> None:
    xml = attribute("@(" + "!" * 950 + "true)")
    with headroom(STACK_HEADROOM):
        document = load(xml)
    assert document.sections["inbound"][0].value.evaluate(make_context()) is True


@pytest.mark.parametrize(
    "comment",
    [
        "// don't stop here",
        "/* it's fine */",
        '// a ) or } or " in a comment',
        "/* can't, won't, shouldn't */",
    ],
)
async def test_apostrophes_and_brackets_in_csharp_comments_load(comment: str) -> None:
    xml = f"""<policies>
      <inbound><base />
        <set-variable name="block" value="@{{
            {comment}
            var name = context.Request.Headers.GetValueOrDefault(&quot;x-user-id&quot;, &quot;none&quot;); {comment}
            return name;
        }}" />
        <set-variable name="inline" value="@(context.Request.Method {comment}
        )" />
        <set-header name="x-text" exists-action="override"><value>@{{ {comment}
            return "it's " + (string)context.Variables["block"]; }}</value></set-header>
      </inbound>
      <backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error>
    </policies>"""
    context = make_context()
    assert await pipeline_of(xml).execute(context) is None
    assert (context.Variables["block"], context.Variables["inline"]) == ("alice", "POST")
    assert context.Request.Headers.GetValueOrDefault("x-text") == "it's alice"


@contextmanager
def headroom(frames: int) -> Iterator[None]:
    """Run with only `frames` Python frames of stack above the caller, as a deep host call path would."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def deepest_document() -> str:
    """Elements nested to the XML bound, the innermost value nesting expressions to their bound, run through."""
    levels = (MAX_XML_DEPTH - 3) // 2
    inner = "Math.Abs(" * (MAX_NESTING - 2) + 'context.Variables.GetValueOrDefault<int>("n")' + ")" * (MAX_NESTING - 2)
    opened = '<choose><when condition="@(true)">' * levels
    closed = "</when></choose>" * levels
    block = "{" * (MAX_NESTING - 5) + "return " + '$"{' * 3 + "1" + '}"' * 3 + ";" + "}" * (MAX_NESTING - 5)
    escape: Callable[[str], str] = lambda text: text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")  # noqa: E731
    return (
        f'<policies><inbound><set-variable name="n" value="@(-5)" />{opened}'
        f'<set-variable name="deep" value="{escape("@(" + inner + ")")}" />'
        f'<set-variable name="block" value="{escape("@{" + block + "}")}" />'
        f"{closed}</inbound><backend><base /></backend></policies>"
    )


async def test_a_document_at_every_bound_loads_and_runs_with_bounded_stack() -> None:
    xml = deepest_document()
    with headroom(STACK_HEADROOM):
        pipeline = pipeline_of(xml)
    context = make_context()
    with headroom(STACK_HEADROOM):
        assert await pipeline.execute(context) is None
    assert (context.Variables["deep"], context.Variables["block"]) == (5, "1")


def test_compile_memory_grows_linearly_with_expression_length() -> None:
    def peak(terms: int) -> int:
        source = " + ".join(['context.Variables.GetValueOrDefault<int>("n", 0)'] * terms)
        tracemalloc.start()
        compile_expression(source)
        _, high = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return high

    peak(10)
    small, large = peak(300), peak(1200)
    assert large < small * 6, (small, large)
    assert large < 16 * 1024 * 1024


def test_the_loader_raises_only_policy_load_errors_on_hostile_input() -> None:
    atoms = ["context", ".", "Request", "[", "]", "(", ")", "{", "}", ";", "var", "x", "=", "1", '"s"', "'c'", "$\"{1}\"", "new",
             "JObject", "<", ">", "+", "&&", "?", ":", "??", "=>", "foreach", "in", "return", "while", "switch", "case", "try",
             "catch", "throw", "out", "is", "as", "int", "List", "Select", "//c\n", "/*x*/", "9" * 30, "1e400", "++", "--",
             "default", "typeof", "null", "Math.Max", "Regex.IsMatch", "'", '"', "@", "&", "<!--", "]]>"]  # fmt: skip
    chosen = random.Random(1234)
    for _ in range(1500):
        body = " ".join(chosen.choice(atoms) for _ in range(chosen.randint(1, 30)))
        opener = chosen.choice(["@(", "@{", ""])
        value = opener + body + {"@(": ")", "@{": "}", "": ""}[opener]
        for xml in (attribute(value), f"<policies><inbound><set-header name='x'><value>{value}</value></set-header></inbound></policies>"):
            try:
                load(xml)
            except PolicyLoadError:
                pass
