"""`<quota>` (per subscription) and `<quota-by-key>` (per any key): calls and/or kilobytes per renewal period.

    <quota-by-key calls="10000" bandwidth="40000" renewal-period="3600" counter-key="@(context.Request.IpAddress)"
                  increment-condition="@(context.Response.StatusCode >= 200 && context.Response.StatusCode < 400)" />

Over the quota: 403 with APIM's "Out of call volume quota. Quota will be replenished in hh:mm:ss." (or "Out
of bandwidth quota. …") and `Retry-After` in seconds; `context.LastError.Reason` `QuotaExceeded`. Counts live
in the shared counters (`context.services.counters`), so they hold across instances like rate limits.

Periods are fixed windows of `renewal-period` seconds counted from `first-period-start` (default
0001-01-01T00:00:00Z, as in APIM); `renewal-period="0"` never renews (no Retry-After then). A call is
counted when admitted; with `increment-condition` it (and its kilobytes) is given back once the backend
answered if the condition does not hold. Bandwidth counts the request body when admitted and the answer's
body (or its Content-Length) once it arrived; a streamed answer has neither then, so only its request
counts. A key is counted once per request even when several statements name it (APIM does the same).
`<quota>` applies only to requests with a subscription; its `<api>`/`<operation>` children are refused
(write one `quota-by-key` per API or operation instead, keyed on the subscription).
"""

from __future__ import annotations

import datetime as _dt
import math
import time
import weakref

from policies.context import Context
from policies.counters import Window
from policies.errors import PolicyError, PolicyResponse
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, as_bool, attr, register
from policies.statements._counting import admit
from policies.xml import PolicyElement

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_APIM_START = _dt.datetime(1, 1, 1, tzinfo=_dt.UTC)
#: The end of a quota that never renews (end of year 9999): finite, so stores can keep it.
_NEVER = 253402300799.0
#: Counter keys this request already counted: a key is counted once per request.
_COUNTED: weakref.WeakKeyDictionary[Context, set[str]] = weakref.WeakKeyDictionary()


class QuotaSettings(Settings):
    calls: int | None = attr(minimum=1)
    bandwidth: int | None = attr(minimum=1)
    renewal_period: int = attr(minimum=0)


class QuotaByKeySettings(QuotaSettings):
    counter_key: Value = attr()
    increment_condition: Value | None = attr()
    increment_count: Value | None = attr(kind=int, minimum=0)
    first_period_start: str | None = attr()


class _Quota(Statement):
    sections = frozenset({"inbound"})

    def __init__(self, settings: QuotaSettings, start: float) -> None:
        self.calls = settings.calls
        self.kilobytes = settings.bandwidth
        self.period = settings.renewal_period
        #: Epoch seconds periods are counted from.
        self.start = start
        self.condition: Value | None = None
        self.increment: Value | None = None

    @staticmethod
    def check(element: PolicyElement, loader: Loader, settings: QuotaSettings) -> None:
        if settings.calls is None and settings.bandwidth is None:
            raise loader.fail(element, "Set calls, bandwidth, or both.")

    def key(self, context: Context) -> str | None:
        """The counter key; None skips the quota."""
        raise NotImplementedError

    async def run(self, context: Context) -> None:
        key = self.key(context)
        counted = _COUNTED.setdefault(context, set())
        if key is None or key in counted:
            return
        counted.add(key)
        window = self.window()
        amount = int(self.increment.evaluate(context)) if self.increment is not None else 1
        if self.calls is not None:
            admission = await admit(context, f"{key}:calls", window, amount, self.calls, self.condition)
            if not admission.allowed:
                self._refuse(window, "call volume")
        if self.kilobytes is not None:
            request_kb = math.ceil(len(context.Request.Body.content) / 1024)
            admission = await admit(context, f"{key}:kb", window, request_kb, self.kilobytes, self.condition)
            if not admission.allowed:
                if self.calls is not None:
                    await context.services.counters.add(f"{key}:calls", window, -amount, self.calls)
                self._refuse(window, "bandwidth")
            context.after_backend.append(lambda: self._count_answer(context, f"{key}:kb", window))

    def window(self, now: float | None = None) -> Window:
        if self.period == 0:
            return Window(f"q0@{self.start:.0f}", _NEVER)
        now = time.time() if now is None else now
        begins = self.start + math.floor((now - self.start) / self.period) * self.period
        return Window(f"q{self.period}@{begins:.0f}", begins + self.period)

    async def _count_answer(self, context: Context, key: str, window: Window) -> None:
        if self.kilobytes is None or context.Response is None:
            return
        if self.condition is not None and not as_bool(self.condition.evaluate(context), self.condition.source):
            return
        size = len(context.Response.Body.content) or int(context.Response.Headers.GetValueOrDefault("content-length") or 0)
        if size:
            await context.services.counters.add(key, window, math.ceil(size / 1024), self.kilobytes)

    def _refuse(self, window: Window, what: str) -> None:
        message = f"Out of {what} quota."
        headers: dict[str, str] = {}
        if window.end < _NEVER:
            retry_after = window.seconds_left()
            message += f" Quota will be replenished in {_timespan(retry_after)}."
            headers["Retry-After"] = str(retry_after)
        raise PolicyError(self.element, "QuotaExceeded", message, PolicyResponse.error(403, message, headers))


@register
class Quota(_Quota):
    element = "quota"

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> Quota:
        if len(element):
            raise loader.fail(element, "<api> and <operation> quotas are not supported: write a <quota-by-key> per API or operation.")
        settings = loader.settings(element, QuotaSettings)
        cls.check(element, loader, settings)
        return cls(settings, (_APIM_START - _EPOCH).total_seconds())

    def key(self, context: Context) -> str | None:
        return f"quota:{context.Subscription.Id}" if context.Subscription is not None else None


@register
class QuotaByKey(_Quota):
    element = "quota-by-key"

    def __init__(self, settings: QuotaByKeySettings, start: float) -> None:
        super().__init__(settings, start)
        self.counter_key = settings.counter_key
        self.condition = settings.increment_condition
        self.increment = settings.increment_count

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> QuotaByKey:
        loader.children(element, ())
        settings = loader.settings(element, QuotaByKeySettings)
        cls.check(element, loader, settings)
        start = _APIM_START
        if settings.first_period_start is not None:
            try:
                start = _dt.datetime.fromisoformat(settings.first_period_start.replace("Z", "+00:00"))
            except ValueError:
                raise loader.fail(element, f"first-period-start {settings.first_period_start!r} is not yyyy-MM-ddTHH:mm:ssZ.") from None
            if start.tzinfo is None:
                start = start.replace(tzinfo=_dt.UTC)
        return cls(settings, (start - _EPOCH).total_seconds())

    def key(self, context: Context) -> str | None:
        return "quota-by-key:" + ("" if (value := self.counter_key.evaluate(context)) is None else str(value))


def _timespan(seconds: int) -> str:
    """Seconds as .NET prints a TimeSpan: `hh:mm:ss`, or `d.hh:mm:ss` from a day on."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}.{text}" if days else text
