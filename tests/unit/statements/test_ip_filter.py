"""`ip-filter`: callers allowed or forbidden by address and range, from the client address or a header."""

from __future__ import annotations

import pytest

from tests.unit.statements.helpers import (
    body_message,
    context,
    line_of,
    load,
    load_error,
    refusal,
)

ALLOW = """<ip-filter action="allow">
    <address>203.0.113.7</address>
    <address-range from="10.0.0.0" to="10.0.0.255" />
    <address-range from="2001:db8::" to="2001:db8::ffff" />
</ip-filter>"""


@pytest.mark.parametrize("ip", ["203.0.113.7", "10.0.0.0", "10.0.0.255", "::ffff:10.0.0.9", "2001:db8::1", "10.0.0.4:50123"])
async def test_ip_filter_allow_lets_listed_callers_in(ip: str) -> None:
    await load(ALLOW).run(context(ip=ip))


@pytest.mark.parametrize("ip", ["203.0.113.8", "10.0.1.0", "2001:db8::1:0", "::1"])
async def test_ip_filter_allow_refuses_unlisted_callers(ip: str) -> None:
    error = await refusal(load(ALLOW), context(ip=ip))
    assert (error.response.status, error.reason, body_message(error)) == (403, "CallerIpNotAllowed", "Forbidden")


async def test_ip_filter_forbid_refuses_listed_callers_only() -> None:
    statement = load('<ip-filter action="forbid"><address-range from="192.0.2.0" to="192.0.2.127" /></ip-filter>')
    await statement.run(context(ip="192.0.2.128"))
    error = await refusal(statement, context(ip="192.0.2.5"))
    assert (error.response.status, error.reason) == (403, "CallerIpBlocked")


@pytest.mark.parametrize("header", ["X-Forwarded-For", "x-forwarded-for"])
async def test_ip_filter_on_x_forwarded_for_matches_the_address_the_gateway_trusted(header: str) -> None:
    """The client writes the left of X-Forwarded-For; the gateway's client address (trusted hops) is the caller."""
    statement = load(ALLOW.replace('action="allow"', f'action="allow" header-name="{header}"'))
    spoofed = context([(header, "203.0.113.7, 198.51.100.1")], ip="198.51.100.1")
    assert (await refusal(statement, spoofed)).reason == "CallerIpNotAllowed"
    await statement.run(context([(header, "198.51.100.1, 203.0.113.7")], ip="203.0.113.7"))


@pytest.mark.parametrize(
    ("written", "allowed"),
    [("203.0.113.7, 10.9.9.9", True), ("[2001:db8::5]:443", True), ("198.51.100.1, 203.0.113.7", False)],
)
async def test_ip_filter_reads_another_header_as_written(written: str, allowed: bool) -> None:
    statement = load(ALLOW.replace('action="allow"', 'action="allow" header-name="X-Azure-ClientIP"'))
    ctx = context([("X-Azure-ClientIP", written)], ip="192.0.2.1")
    if allowed:
        await statement.run(ctx)
    else:
        assert (await refusal(statement, ctx)).reason == "CallerIpNotAllowed"


@pytest.mark.parametrize("ip", ["", "unknown", "10.0.0.1.5"])
async def test_ip_filter_refuses_unparsable_caller(ip: str) -> None:
    error = await refusal(load(ALLOW), context(ip=ip))
    assert (error.response.status, error.reason) == (403, "FailedToParseCallerIP")


@pytest.mark.parametrize(
    ("fragment", "element", "problem"),
    [
        ('<ip-filter action="allow">\n<address>10.0.0.300</address></ip-filter>', "address", "not an IPv4 or IPv6 address"),
        ('<ip-filter action="allow">\n<address-range from="10.0.0.9" to="10.0.0.1" /></ip-filter>', "address-range", "empty"),
        ('<ip-filter action="allow">\n<address-range from="10.0.0.1" to="2001:db8::1" /></ip-filter>', "address-range", "mixes"),
        ('<ip-filter action="allow">\n<address>@(context.Request.IpAddress)</address></ip-filter>', "address", "expression"),
        ('<ip-filter action="allow">\n<subnet>10.0.0.0/8</subnet></ip-filter>', "subnet", "Unexpected element"),
        ('<ip-filter action="allow" />', "ip-filter", "at least one"),
        ('<ip-filter action="deny"><address>10.0.0.1</address></ip-filter>', "ip-filter", "allow, forbid"),
    ],
)
def test_ip_filter_load_errors_name_element_and_line(fragment: str, element: str, problem: str) -> None:
    error = load_error(fragment)
    assert (error.element, error.line) == (element, line_of(fragment, element))
    assert problem in str(error)
