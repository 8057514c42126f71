"""`@{ … }` blocks: the C# statements APIM policies use, how they run, and what is refused at load."""

from __future__ import annotations

from typing import Any

import pytest

from policies.context import Context
from policies.expressions import ExpressionError, ExpressionRuntimeError, compile_block, compile_expression, compile_value
from tests.policy_helpers import make_context


def run(block: str, context: Context | None = None, **variables: Any) -> Any:
    context = context or make_context()
    for name, value in variables.items():
        context.Variables.set(name, value)
    return compile_block(block).evaluate(context)


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("var x = 2; int y = 3; return x * y;", 6),
        ('string s = null; s ??= "fallback"; return s;', "fallback"),
        ("var total = 10; total += 5; total -= 3; total *= 2; total /= 4; total %= 4; return total;", 2),
        ("var s = \"a\"; s += 1; s += 'c'; return s;", "a1c"),
        ("int a = 1, b = 2; return a + b;", 3),
        ("double d = 1; d += 0.5; return d;", 1.5),
        ("long big = int.MaxValue; big += 1; return big;", 2147483648),
        ("int wrap = int.MaxValue; wrap += 1; return wrap;", -2147483648),
        ("var n = 0; n++; ++n; n--; return n;", 1),
        ("var i = 5; var j = i++; return j * 10 + i;", 56),
        ("const int limit = 3; return limit;", 3),
        ("var x = 1; { var y = x + 1; x = y; } return x;", 2),
        ('return 1 == 1 ? "yes" : "no";', "yes"),
    ],
)
def test_locals_and_assignment_follow_csharp(block: str, expected: Any) -> None:
    result = run(block)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("method", "expected"),
    [("GET", "read"), ("POST", "write"), ("PUT", "write"), ("DELETE", "other")],
)
def test_if_else_chain_and_switch_on_strings_pick_the_same_branch(method: str, expected: str) -> None:
    context = make_context()
    context.Request.Method = method
    chained = run(
        """
        var m = context.Request.Method;
        if (m == "GET") { return "read"; }
        else if (m == "POST" || m == "PUT") { return "write"; }
        else { return "other"; }
        """,
        context,
    )
    switched = run(
        """
        switch (context.Request.Method) {
            case "GET": return "read";
            case "POST":
            case "PUT":
                return "write";
            default:
                return "other";
        }
        """,
        context,
    )
    assert chained == switched == expected


def test_switch_break_continues_after_the_switch() -> None:
    block = """
        var tier = "none";
        switch (context.Variables.GetValueOrDefault<int>("level")) {
            case 1: tier = "bronze"; break;
            case 2: tier = "silver"; break;
        }
        return tier;
    """
    assert run(block, level=2) == "silver"
    assert run(block, level=7) == "none"


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("var sum = 0; for (int i = 1; i <= 4; i++) { sum += i; } return sum;", 10),
        ("var sum = 0; for (int i = 0, j = 10; i < j; i++, j--) { sum++; } return sum;", 5),
        ('var s = ""; foreach (var part in "a,b,c".Split(\',\')) { s = part + s; } return s;', "cba"),
        ("var n = 0; foreach (char c in \"hello\") { if (c == 'l') { n++; } } return n;", 2),
        ("var n = 0; while (n < 100) { n += 7; } return n;", 105),
        ("var n = 0; do { n++; } while (n < 0); return n;", 1),
        ("var n = 0; while (true) { n++; if (n == 3) { break; } } return n;", 3),
        ("var odd = 0; for (var i = 0; i < 10; i++) { if (i % 2 == 0) continue; odd += i; } return odd;", 25),
        ('for (;;) { return "first"; }', "first"),
        (
            'var keys = new List<string>(); foreach (var pair in new Dictionary<string, int> { { "a", 1 }, { "b", 2 } }) '
            '{ keys.Add(pair.Key + pair.Value); } return string.Join(",", keys);',
            "a1,b2",
        ),
        ("var count = 0; foreach (var item in new JArray(1, 2, 3)) { count += (int)item; } return count;", 6),
    ],
)
def test_loops_run_break_and_continue(block: str, expected: Any) -> None:
    assert run(block) == expected


def test_foreach_walks_headers_as_name_and_values() -> None:
    context = make_context(headers=[("X-A", "1"), ("x-a", "2"), ("X-B", "3")])
    block = """
        var seen = new List<string>();
        foreach (var header in context.Request.Headers) { seen.Add(header.Key + "=" + string.Join("|", header.Value)); }
        return string.Join(";", seen);
    """
    assert run(block, context) == "X-A=1|2;X-B=3"


def test_foreach_over_a_collection_it_changes_walks_a_snapshot() -> None:
    assert run("var items = new List<int> { 1, 2 }; foreach (var i in items) { items.Add(i); } return items.Count;") == 4


def test_foreach_with_a_declared_type_casts_each_item() -> None:
    block = """
        var config = JArray.Parse("[{\\"name\\":\\"a\\",\\"weight\\":2},{\\"name\\":\\"b\\",\\"weight\\":3}]");
        var total = 0;
        foreach (JObject entry in config) { total += entry.GetValue("weight").Value<int>(); }
        return total;
    """
    assert run(block) == 5
    with pytest.raises(ExpressionRuntimeError, match="cannot convert an item"):
        run("foreach (JObject o in new JArray(1)) { return 1; } return 0;")


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ('try { return int.Parse("x"); } catch (FormatException) { return -1; }', -1),
        ('try { return int.Parse("x"); } catch (Exception ex) { return ex.Message; }', "The input string was not in a correct format."),
        ('try { return JObject.Parse("{"); } catch (JsonException) { return null; }', None),
        ("try { return new List<int>().First(); } catch (InvalidOperationException) { return 0; }", 0),
        (
            'try { throw new ArgumentException("bad"); } catch (FormatException) { return 1; } catch (ArgumentException e) { return e.Message; }',
            "bad",
        ),
        ('try { throw new Exception("x"); } catch (Exception e) when (e.Message == "y") { return 1; } catch { return 2; }', 2),
        ('var log = ""; try { log += "a"; } finally { log += "b"; } return log;', "ab"),
        ("string s = null; try { return s.Length; } catch (NullReferenceException) { return -1; }", -1),
    ],
)
def test_try_catch_matches_dotnet_exception_types(block: str, expected: Any) -> None:
    assert run(block) == expected


def test_uncaught_throw_and_rethrow_fail_the_evaluation() -> None:
    with pytest.raises(ExpressionRuntimeError, match="InvalidOperationException: no backend") as caught:
        run('throw new InvalidOperationException("no backend");')
    assert caught.value.kind == "InvalidOperationException"
    with pytest.raises(ExpressionRuntimeError, match="FormatException"):
        run('try { return int.Parse("x"); } catch (FormatException) { throw; }')


def test_using_blocks_declare_and_run() -> None:
    block = """
        string hex;
        using (var sha = System.Security.Cryptography.SHA256.Create()) {
            hex = BitConverter.ToString(sha.ComputeHash(Encoding.UTF8.GetBytes("abc"))).Replace("-", "");
        }
        return hex.Substring(0, 8);
    """
    assert run(block) == "BA7816BF"


def test_lambda_with_block_body_and_captured_local() -> None:
    block = """
        var minimum = 2;
        var picked = new[] { 1, 2, 3, 4 }.Where(n => { var doubled = n * 2; return doubled > minimum * 2; }).ToList();
        return picked.Count;
    """
    assert run(block) == 2


def test_out_variables_and_patterns_declare_locals() -> None:
    block = """
        var text = context.Request.Headers.GetValueOrDefault("x-retry", "12");
        if (int.TryParse(text, out var seconds) && context.Variables["limit"] is int limit && seconds < limit) { return seconds; }
        return -1;
    """
    assert run(block, limit=30) == 12
    assert run(block, limit="30") == -1


def test_locals_are_fresh_per_evaluation() -> None:
    expression = compile_block('var n = context.Variables.GetValueOrDefault<int>("n"); n++; return n;')
    first, second = make_context(), make_context()
    first.Variables.set("n", 1)
    second.Variables.set("n", 10)
    assert (expression.evaluate(first), expression.evaluate(second), expression.evaluate(first)) == (2, 11, 2)


def test_value_with_a_block_compiles_with_named_values() -> None:
    value = compile_value('@{ var tenant = "{{tenant}}"; return tenant.ToUpperInvariant(); }', {"tenant": "contoso"})
    assert not value.is_constant and value.evaluate(make_context()) == "CONTOSO"


def test_expression_with_a_lambda_gets_its_locals() -> None:
    assert compile_expression('new[] { "a", "bb" }.Select(s => s.Length).Sum()').evaluate(make_context()) == 3


@pytest.mark.parametrize(
    ("block", "fragment"),
    [
        ("var x = 1;", "Not all code paths return a value"),
        ("if (true) { return 1; }", "Not all code paths return a value"),
        ('while (context.Variables.ContainsKey("x")) { return 1; }', "Not all code paths return a value"),
        ("while (true) { break; }", "Not all code paths return a value"),
        ("switch (1) { case 1: return 1; }", "Not all code paths return a value"),
        ("switch (1) { case 1: var a = 1; default: return 2; }", "Control cannot fall through"),
        ("switch (1) { case 1: return 1; case 1: return 2; }", "appears twice"),
        ("switch (1) { case context.Request.Method: return 1; default: return 2; }", "must be a constant"),
        ("var x = 1; var x = 2; return x;", "A local named 'x' is already defined"),
        ("var x = 1; { var x = 2; } return x;", "A local named 'x' is already defined"),
        ("var context = 1; return context;", "A local named 'context' is already defined"),
        ("var x; return 1;", "'var x' needs an initializer"),
        ("var x = null; return x;", "Cannot declare 'var x' from null"),
        ('int x = "a"; return x;', "Cannot assign string '\"a\"' to 'x' (int)"),
        ("int x = 1.5; return x;", "Cannot assign double"),
        ('var x = 1; x = "a"; return x;', "Cannot assign string"),
        ("1 + 1; return 1;", "does nothing on its own"),
        ('context.Request.Method = "GET"; return 1;', "Only local variables and indexers can be assigned"),
        ("break; return 1;", "'break' is only allowed inside a loop or switch"),
        ("continue;", "'continue' is only allowed inside a loop"),
        ("return;", "must return a value"),
        ("throw;", "'throw;' is only allowed inside a 'catch'"),
        ('throw "x";', "Only exceptions can be thrown"),
        ("try { return 1; }", "'try' needs a 'catch' or a 'finally'"),
        ("try { return 1; } catch (MadeUpException) { return 2; }", "Unknown exception type 'MadeUpException'"),
        ("try { return 1; } finally { return 2; }", "Control cannot leave the body of a 'finally'"),
        ("goto end; return 1;", "'goto' is not supported"),
        ("lock (context) { return 1; }", "'lock' is not supported"),
        ("if (1) { return 1; } return 2;", "The condition of 'if' must be a bool"),
        ("foreach (var x in 5) { return 1; } return 2;", "'foreach' cannot walk int"),
        ("var f = x => x; return 1;", "Unknown name 'x'"),
        ("return new[] { 1 }.Where(x => { if (x > 0) { return true; } });", "Not all code paths of the lambda return a value"),
        ("return new[] { 1 }.Select((a, b, c) => a);", "The lambda takes 3 parameters"),
        ("{ return 1;", "is not closed"),
    ],
)
def test_block_refused_at_load(block: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_block(block)
    assert fragment in str(caught.value)


def test_load_error_in_long_block_names_its_line() -> None:
    block = "".join(f"var a{i} = {i};\n" for i in range(20)) + "var b = a3.Lenght;\nreturn b;"
    with pytest.raises(ExpressionError, match="at its line 21") as caught:
        compile_block(block)
    assert len(str(caught.value)) < 400


def test_runtime_error_in_block_names_the_failing_part() -> None:
    with pytest.raises(ExpressionRuntimeError) as caught:
        run('var items = new List<string> { "a" };\nvar first = items[3];\nreturn first;')
    assert "Index 3 is out of range for 'items' (1 items)" in str(caught.value)
    assert caught.value.kind == "ArgumentOutOfRangeException"
