"""Run-time bounds: an evaluation stops with ExpressionLimitError past its steps, time or allocation bound, no
`catch` can swallow that, and the pipeline answers 500 instead of stalling."""

from __future__ import annotations

import time

import orjson
import pytest

from policies.expressions import ExpressionRuntimeError, _limits, compile_block, compile_expression
from policies.expressions._errors import ExpressionLimitError
from policies.expressions._limits import MAX_ITEMS, MAX_SECONDS, MAX_STEPS, MAX_TEXT_CHARS
from tests.policy_helpers import make_context, pipeline_of


def run(block: str) -> object:
    return compile_block(block).evaluate(make_context())


@pytest.fixture
def steps_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The step bound alone: on a slow or traced machine the 0.5 s time bound would otherwise come first."""
    monkeypatch.setattr(_limits, "MAX_SECONDS", 60.0)


@pytest.mark.parametrize(
    "block",
    [
        "while (true) { }",
        "for (;;) { }",
        "var n = 0; do { n++; } while (n >= 0 || true); return n;",
        "var n = 0; while (true) { try { n++; } catch { } } ",
        "return Enumerable.Range(0, 1000).Select(i => Enumerable.Range(0, 1000).Count(j => j > i)).Sum();",
    ],
)
def test_endless_loops_stop_at_the_step_bound(block: str, steps_only: None) -> None:
    block = block if "return" in block else block + " return 0;"
    started = time.monotonic()
    with pytest.raises(ExpressionLimitError, match=f"more than {MAX_STEPS:,} steps") as caught:
        run(block)
    assert time.monotonic() - started < 60
    assert caught.value.kind == "LimitExceeded"
    assert "in expression" in str(caught.value)


def test_catch_cannot_swallow_a_limit() -> None:
    block = """
        var rounds = 0;
        while (true) {
            try { while (true) { } }
            catch (Exception) { rounds++; }
            catch { rounds++; }
        }
        return rounds;
    """
    with pytest.raises(ExpressionLimitError):
        run(block)


def test_costly_steps_stop_at_the_time_bound() -> None:
    block = """
        var text = new string('x', 4000000);
        var changed = 0;
        for (var i = 0; i < 5000; i++) { changed += text.Replace("x", "y").Length; }
        return changed;
    """
    started = time.monotonic()
    with pytest.raises(ExpressionLimitError, match=f"ran for more than {MAX_SECONDS:g} s"):
        run(block)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("block", "fragment"),
    [
        ('var s = "x"; while (true) { s += s; }', f"longer than {MAX_TEXT_CHARS:,} characters"),
        ('var s = "x"; while (true) { s = string.Concat(s, s); }', f"longer than {MAX_TEXT_CHARS:,} characters"),
        ('var s = "x"; for (var i = 0; i < 40; i++) { s = s.PadLeft(s.Length * 2); }', f"longer than {MAX_TEXT_CHARS:,} characters"),
        ('var b = new StringBuilder("xx"); while (true) { b.Append(b.ToString()); }', f"longer than {MAX_TEXT_CHARS:,} characters"),
        ("return new string('x', int.MaxValue);", f"longer than {MAX_TEXT_CHARS:,} characters"),
        ('var s = "ab"; while (true) { s = s.Replace("a", "aa"); s = s.Replace("b", s); }', f"longer than {MAX_TEXT_CHARS:,} characters"),
    ],
)
def test_strings_cannot_grow_past_the_size_bound(block: str, fragment: str) -> None:
    block = block if "return" in block else block + " return 0;"
    with pytest.raises(ExpressionLimitError, match=fragment):
        run(block)


@pytest.mark.parametrize(
    ("block", "fragment"),
    [
        ("return new string[2000000];", f"between 0 and {MAX_ITEMS:,}"),
        ("return Enumerable.Repeat(1, 5000000).Count();", f"between 0 and {MAX_ITEMS:,}"),
        ("var list = new List<int> { 1 }; while (true) { list.AddRange(list); }", "more than"),
    ],
)
def test_collections_cannot_grow_past_the_bounds(block: str, fragment: str) -> None:
    block = block if "return" in block else block + " return 0;"
    with pytest.raises(ExpressionRuntimeError, match=fragment):
        run(block)


def test_integers_wrap_instead_of_growing() -> None:
    value = run("long x = 3; for (var i = 0; i < 500; i++) { x = x * x + 1; } return x;")
    assert isinstance(value, int) and -(2**63) <= value < 2**63
    assert run("int y = 1; for (var i = 0; i < 40; i++) { y = y * 2; } return y;") == 0


def test_evaluation_counts_steps_afresh_each_time(steps_only: None) -> None:
    expression = compile_block("var n = 0; for (var i = 0; i < 30000; i++) { n++; } return n;")
    assert [expression.evaluate(make_context()) for _ in range(4)] == [30000] * 4


def test_a_pure_expression_needs_no_frame_and_still_bounds_strings() -> None:
    context = make_context()
    context.Variables.set("big", "x" * (MAX_TEXT_CHARS // 2 + 1))
    expression = compile_expression('(string)context.Variables["big"] + (string)context.Variables["big"]')
    with pytest.raises(ExpressionLimitError, match="longer than"):
        expression.evaluate(context)


async def test_pipeline_answers_500_when_a_block_hits_a_bound() -> None:
    document = """<policies>
      <inbound><base /><set-variable name="spin" value="@{ while (true) { } return 0; }" /></inbound>
      <backend><base /></backend><outbound><base /></outbound>
      <on-error><base /><set-header name="x-reason" exists-action="override"><value>@(context.LastError.Reason)</value></set-header></on-error>
    </policies>"""
    started = time.monotonic()
    result = await pipeline_of(document).execute(make_context())
    assert time.monotonic() - started < 5
    assert result is not None and result.status == 500
    assert orjson.loads(result.body)["error"]["code"] == "ExpressionValueEvaluationFailure"
    assert ("x-reason", "ExpressionValueEvaluationFailure") in result.headers
