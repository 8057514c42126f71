"""`<cache-lookup-value>`, `<cache-store-value>`, `<cache-remove-value>`: values by key, shared by every instance.

    <cache-lookup-value key="@("token-" + context.Subscription.Id)" variable-name="token" default-value="none" />
    <cache-store-value key="@("token-" + context.Subscription.Id)" value="@((string)context.Variables["token"])" duration="300" />
    <cache-remove-value key="@("token-" + context.Subscription.Id)" />

As in APIM: a hit sets `variable-name` to the stored value (a string, number, boolean, JObject or JArray comes
back as what was stored); a miss sets it to `default-value` when one is given and leaves it unset otherwise
(APIM's docs say both "null is assigned" and "the variable is not set"; an unset variable is what
`ContainsKey` checks in the samples, and what they expect). `duration` is the time to live in seconds.

`caching-type` (internal, external, prefer-external) is accepted: every kind is the gateway's one store in
Table Storage (gateway/stores/value_cache.py), shared by all instances, so a value stored on one instance is
found on another. Keys are namespaced per gateway (table prefix). The statements never fail a request for the
cache: with storage unavailable a lookup misses and a store or removal is dropped (fail open, logged once
per outage); a key over 4,096 characters or a value over ~900 KB is not cached (logged). Unlike APIM's cache
a store is finished before the next statement runs, so the next request sees it.
"""

from __future__ import annotations

from policies.context import Context
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.xml import PolicyElement

CACHING_TYPES = ("internal", "external", "prefer-external")
#: A year: longer durations are refused at load and cut to this at run time.
MAX_DURATION_SECONDS = 366 * 86400


class CacheLookupValueSettings(Settings):
    key: Value = attr()
    variable_name: str = attr()
    default_value: Value | None = attr()
    caching_type: str = attr(choices=CACHING_TYPES, default="prefer-external")


class CacheStoreValueSettings(Settings):
    key: Value = attr()
    value: Value = attr()
    duration: Value = attr(kind=int, minimum=1, maximum=MAX_DURATION_SECONDS)
    caching_type: str = attr(choices=CACHING_TYPES, default="prefer-external")


class CacheRemoveValueSettings(Settings):
    key: Value = attr()
    caching_type: str = attr(choices=CACHING_TYPES, default="prefer-external")


def _key(value: Value, context: Context) -> str:
    key = value.evaluate(context)
    return "" if key is None else str(key)


@register
class CacheLookupValue(Statement):
    element = "cache-lookup-value"

    def __init__(self, settings: CacheLookupValueSettings) -> None:
        self.key = settings.key
        self.variable = settings.variable_name
        self.default = settings.default_value

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> CacheLookupValue:
        loader.children(element, ())
        return cls(loader.settings(element, CacheLookupValueSettings))

    async def run(self, context: Context) -> None:
        found, value = await context.services.value_cache.lookup(_key(self.key, context))
        if found:
            context.Variables.set(self.variable, value)
        elif self.default is not None:
            context.Variables.set(self.variable, self.default.evaluate(context))


@register
class CacheStoreValue(Statement):
    element = "cache-store-value"

    def __init__(self, settings: CacheStoreValueSettings) -> None:
        self.key = settings.key
        self.value = settings.value
        self.duration = settings.duration

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> CacheStoreValue:
        loader.children(element, ())
        return cls(loader.settings(element, CacheStoreValueSettings))

    async def run(self, context: Context) -> None:
        try:
            duration = float(self.duration.evaluate(context))
        except (TypeError, ValueError):
            duration = 0.0
        if duration > 0:  # a duration that is not a positive number stores nothing (APIM does not say what it does)
            await context.services.value_cache.store(_key(self.key, context), self.value.evaluate(context), min(duration, MAX_DURATION_SECONDS))


@register
class CacheRemoveValue(Statement):
    element = "cache-remove-value"

    def __init__(self, key: Value) -> None:
        self.key = key

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> CacheRemoveValue:
        loader.children(element, ())
        return cls(loader.settings(element, CacheRemoveValueSettings).key)

    async def run(self, context: Context) -> None:
        await context.services.value_cache.remove(_key(self.key, context))
