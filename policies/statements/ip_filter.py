"""`<ip-filter>`: allow only, or forbid, callers from listed IP addresses and ranges (IPv4 and IPv6).

    <ip-filter action="allow">
        <address>13.66.201.169</address>
        <address-range from="13.66.140.128" to="13.66.140.143" />
    </ip-filter>

The caller is `context.Request.IpAddress`. `header-name="X-Forwarded-For"` names the same address: every proxy
appends to that header, so its left entries are whatever the client wrote, and only the entry written by the
outermost trusted proxy identifies the caller. The gateway picks that entry once, by the rule of its
`GATEWAY_TRUSTED_PROXY_HOPS` setting (the entry that many places from the right; the TCP peer when no proxy is
trusted or the header is shorter than the chain), and that is `context.Request.IpAddress`; so an
`X-Forwarded-For: 10.1.2.3, <real address>` sent through one trusted proxy is matched as `<real address>`.
Any other `header-name` is read as written (its first entry): use one only when the proxy in front of the
gateway overwrites it, never one the client can set. An IPv4-mapped IPv6 caller (`::ffff:10.0.0.1`) is
matched as IPv4. Addresses are parsed at load, so a typo is a load error, never an open door.

Refusals answer 403 "Forbidden"; `context.LastError.Reason`, as APIM names them, is `CallerIpNotAllowed`
(not on the allow list), `CallerIpBlocked` (on the forbid list) or `FailedToParseCallerIP`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from policies.context import Context
from policies.errors import PolicyError, PolicyResponse
from policies.statement import Loader, Settings, Statement, attr, register
from policies.xml import PolicyElement

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: The header the gateway already reads through its trusted proxies into `context.Request.IpAddress`.
FORWARDED_FOR = "x-forwarded-for"


@dataclass(frozen=True)
class AddressRange:
    first: IpAddress
    last: IpAddress

    def __contains__(self, address: IpAddress) -> bool:
        return address.version == self.first.version and int(self.first) <= int(address) <= int(self.last)


class IpFilterSettings(Settings):
    action: str = attr(choices=("allow", "forbid"))
    header_name: str | None = attr()


class AddressRangeSettings(Settings):
    first: str = attr("from")
    last: str = attr("to")


@register
class IpFilter(Statement):
    element = "ip-filter"
    sections = frozenset({"inbound"})

    def __init__(self, allow: bool, ranges: tuple[AddressRange, ...], header: str | None) -> None:
        self.allow = allow
        self.ranges = ranges
        self.header = header

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> IpFilter:
        settings = loader.settings(element, IpFilterSettings)
        ranges = tuple(_load_range(child, loader) for child in loader.children(element, ("address", "address-range")))
        if not ranges:
            raise loader.fail(element, "Add at least one <address> or <address-range>.")
        return cls(settings.action == "allow", ranges, settings.header_name)

    async def run(self, context: Context) -> None:
        caller = caller_address(self._raw_caller(context))
        if caller is None:
            raise _forbidden("FailedToParseCallerIP", "Failed to establish IP address for the caller. Access denied.")
        listed = any(caller in listed_range for listed_range in self.ranges)
        if self.allow and not listed:
            raise _forbidden("CallerIpNotAllowed", f"Caller IP address {caller} is not allowed. Access denied.")
        if listed and not self.allow:
            raise _forbidden("CallerIpBlocked", "Caller IP address is blocked. Access denied.")

    def _raw_caller(self, context: Context) -> str:
        if self.header is None or self.header.lower() == FORWARDED_FOR:
            return context.Request.IpAddress
        forwarded = context.Request.Headers.GetValueOrDefault(self.header) or ""
        return forwarded.split(",", 1)[0]


def caller_address(text: str) -> IpAddress | None:
    """An address as proxies write it: bare, `v4:port` or `[v6]:port`; IPv4-mapped IPv6 as IPv4. None if unparsable."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def _load_range(element: PolicyElement, loader: Loader) -> AddressRange:
    loader.children(element, ())
    if element.tag == "address":
        loader.no_attributes(element)
        text = loader.text(element)
        address = _parse(element, loader, text.constant if text.is_constant else None)
        return AddressRange(address, address)
    bounds = loader.settings(element, AddressRangeSettings)
    first = _parse(element, loader, bounds.first)
    last = _parse(element, loader, bounds.last)
    if first.version != last.version or int(first) > int(last):
        raise loader.fail(element, f"The range {first} to {last} is empty or mixes IPv4 and IPv6.")
    return AddressRange(first, last)


def _parse(element: PolicyElement, loader: Loader, text: object) -> IpAddress:
    if text is None:
        raise loader.fail(element, "An address must be literal text or a named value, not an expression.")
    try:
        return ipaddress.ip_address(str(text).strip())
    except ValueError:
        raise loader.fail(element, f"{str(text).strip()!r} is not an IPv4 or IPv6 address.") from None


def _forbidden(reason: str, message: str) -> PolicyError:
    return PolicyError("ip-filter", reason, message, PolicyResponse.error(403, "Forbidden"))
