"""Declared statement settings: what `Loader.settings` makes of an element's attributes, and declaration mistakes."""

from __future__ import annotations

import pytest

from policies.errors import PolicyLoadError
from policies.expressions import Value
from policies.statement import Loader, Settings, attr
from policies.xml import parse
from tests.policy_helpers import make_context


class Example(Settings):
    calls: Value = attr(kind=int, minimum=1)
    counter_key: Value | None = attr()
    header_name: str | None = attr()
    ignore_error: bool = attr(default=False)
    timeout: int = attr(default=30, maximum=3600)
    first: str | None = attr("from")


def settings(xml: str, named_values: dict[str, str] | None = None) -> Example:
    return Loader(named_values=named_values or {}).settings(parse(xml), Example)


def load_error(xml: str) -> str:
    with pytest.raises(PolicyLoadError) as caught:
        settings(xml)
    return str(caught.value)


def test_constants_arrive_converted_and_values_evaluate() -> None:
    loaded = settings('<x calls="{{n}}" counter-key="@(context.Api.Id)" header-name="x-left" ignore-error="TRUE" from="a" />', {"n": "5"})
    assert loaded.calls.constant == 5 and loaded.calls.is_constant
    assert loaded.counter_key is not None and loaded.counter_key.evaluate(make_context()) == "openai"
    assert (loaded.header_name, loaded.ignore_error, loaded.timeout, loaded.first) == ("x-left", True, 30, "a")


def test_absent_optional_attributes_are_none_and_id_is_ignored() -> None:
    loaded = settings('<x id="apim-generated" calls="1" />')
    assert (loaded.counter_key, loaded.header_name, loaded.first) == (None, None, None)


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<x />", "Attribute 'calls' is required."),
        ('<x calls="1" colour="red" />', "Unknown attribute 'colour'; allowed: calls, counter-key, from, header-name, ignore-error, timeout."),
        ('<x calls="1" header-name="@(context.Api.Id)" />', "Attribute 'header-name' does not accept policy expressions."),
        ('<x calls="0" />', "Attribute 'calls' has value '0': it must be at least 1."),
        ('<x calls="1" timeout="soon" />', "Attribute 'timeout' has value 'soon': expected an integer."),
        ('<x calls="1" ignore-error="yes" />', "Attribute 'ignore-error' has value 'yes': expected true or false."),
    ],
)
def test_load_errors_name_the_attribute(xml: str, message: str) -> None:
    assert load_error(xml).endswith(message)


def test_declaration_mistakes_fail_at_first_use() -> None:
    class OptionalWithDefault(Settings):
        size: int | None = attr(default=3)

    class KindOnConstant(Settings):
        size: int = attr(kind=int)

    for declared in (OptionalWithDefault, KindOnConstant):
        with pytest.raises(TypeError):
            Loader().settings(parse("<x />"), declared)


def test_settings_are_frozen() -> None:
    loaded = settings('<x calls="1" />')
    with pytest.raises(AttributeError):
        loaded.timeout = 5  # type: ignore[misc]
