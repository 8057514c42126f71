"""`<azure-openai-token-limit>` / `<llm-token-limit>`: tokens per minute and token quotas per counter key.

    <llm-token-limit counter-key="@(context.Subscription.Id)" tokens-per-minute="10000"
                     token-quota="1000000" token-quota-period="Monthly" estimate-prompt-tokens="true"
                     remaining-tokens-header-name="x-remaining-tokens" tokens-consumed-header-name="x-consumed" />

Stricter than APIM, which charges after the fact: before forwarding, the request *reserves* its prompt
(counted with tiktoken over every field the model bills as input) plus its max_tokens (or the configured default reservation), is admitted only if that
reservation fits, and settles to the real usage when it is known. Concurrent bursts therefore stay within
the limit, across every instance (the counters are shared, see gateway/shared_counters.py).

Over the rate: 429 "Token limit is exceeded. Try again in N seconds." with Retry-After, reason
`OpenAITokenLimitExceeded`. Over the quota: 403 "Token quota is exceeded. Try again in N seconds.", reason
`OpenAITokenQuotaExceeded`. Rate windows are epoch-aligned minutes; quota periods are UTC calendar periods.

`estimate-prompt-tokens` decides what `tokens-consumed-variable-name` starts at (the estimate, or 0); the
reservation always uses the estimate. `tokens-consumed-header-name` reaches the client only for buffered
answers: a stream's headers are sent before its usage is known (its variable is still updated).
The 2024 attribute names `consumed-tokens-header-name` / `-variable-name` are accepted too.
"""

from __future__ import annotations

from policies.context import Context
from policies.counters import QUOTA_PERIODS, Window, quota_window
from policies.errors import PolicyError, PolicyResponse
from policies.expressions import Value
from policies.statement import Attr, Loader, Statement, register
from policies.usage import Usage
from policies.xml import PolicyElement

_NAMES = (
    "retry-after-header-name", "retry-after-variable-name", "remaining-quota-tokens-header-name",
    "remaining-quota-tokens-variable-name", "remaining-tokens-header-name", "remaining-tokens-variable-name",
    "tokens-consumed-header-name", "tokens-consumed-variable-name",
)  # fmt: skip
_OLD_NAMES = {"consumed-tokens-header-name": "tokens-consumed-header-name", "consumed-tokens-variable-name": "tokens-consumed-variable-name"}


@register
class TokenLimit(Statement):
    element = "azure-openai-token-limit"
    aliases = ("llm-token-limit",)
    sections = frozenset({"inbound"})
    attributes = (
        Attr("counter-key", required=True),
        Attr("tokens-per-minute", kind=int, minimum=1),
        Attr("token-quota", kind=int, minimum=1),
        Attr("token-quota-period", choices=QUOTA_PERIODS),
        Attr("estimate-prompt-tokens", required=True, kind=bool, expressions=False),
        *(Attr(name, expressions=False) for name in _NAMES),
        *(Attr(name, expressions=False) for name in _OLD_NAMES),
    )

    def __init__(self, values: dict[str, Value | None], names: dict[str, str | None]) -> None:
        self.counter_key = values["counter-key"]
        self.tokens_per_minute = values["tokens-per-minute"]
        self.token_quota = values["token-quota"]
        self.quota_period = values["token-quota-period"]
        self.estimate_prompt = bool(values["estimate-prompt-tokens"].constant)  # type: ignore[union-attr]
        self.names = names

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> TokenLimit:
        loader.children(element, ())
        values = loader.attributes(element, cls.attributes)
        if values["tokens-per-minute"] is None and values["token-quota"] is None:
            raise loader.fail(element, "Set tokens-per-minute, token-quota with token-quota-period, or both.")
        if (values["token-quota"] is None) != (values["token-quota-period"] is None):
            raise loader.fail(element, "token-quota and token-quota-period go together.")
        names: dict[str, str | None] = {name: _constant(values[name]) for name in _NAMES}
        for old, new in _OLD_NAMES.items():
            names[new] = names[new] or _constant(values[old])
        return cls(values, names)

    async def run(self, context: Context) -> None:
        assert self.counter_key is not None
        key = str(self.counter_key.evaluate(context))
        services = context.services
        rate_limit = int(self.tokens_per_minute.evaluate(context)) if self.tokens_per_minute is not None else None
        quota = int(self.token_quota.evaluate(context)) if self.token_quota is not None and self.quota_period is not None else None
        allowance = services.completion_allowance(context)
        # A reservation above every limit is refused by the first one: such a prompt need not be tokenized exactly.
        ceiling = max(limit for limit in (rate_limit, quota) if limit is not None) - allowance
        prompt = await services.estimate_prompt_tokens(context, max(0, ceiling))
        reservation = prompt + allowance
        reserved: list[tuple[str, Window, int]] = []
        if rate_limit is not None:
            window = Window.fixed(services.token_rate_window_seconds)
            admission = await services.counters.acquire(f"tpm:{key}", window, reservation, rate_limit)
            self._publish(context, "remaining-tokens", admission.remaining)
            if not admission.allowed:
                self._refuse(context, window, 429, "OpenAITokenLimitExceeded", "Token limit is exceeded")
            reserved.append((f"tpm:{key}", window, rate_limit))
        if quota is not None:
            window = quota_window(str(self.quota_period.evaluate(context)))  # type: ignore[union-attr]
            admission = await services.counters.acquire(f"quota:{key}", window, reservation, quota)
            self._publish(context, "remaining-quota-tokens", admission.remaining)
            if not admission.allowed:
                for counter, held_window, held_limit in reserved:
                    await services.counters.add(counter, held_window, -reservation, held_limit)
                self._refuse(context, window, 403, "OpenAITokenQuotaExceeded", "Token quota is exceeded")
            reserved.append((f"quota:{key}", window, quota))
        self._set_variable(context, "tokens-consumed", prompt if self.estimate_prompt else 0)

        async def settle(usage: Usage) -> None:
            used = 0 if usage.from_cache else usage.total  # a cached answer spent no backend tokens
            for counter, window, limit in reserved:
                await services.counters.add(counter, window, used - reservation, limit)
            self._set_variable(context, "tokens-consumed", used)
            header = self.names["tokens-consumed-header-name"]
            if header:
                context.response_headers.append((header, str(used)))

        context.usage_listeners.append(settle)

    def _publish(self, context: Context, what: str, remaining: int) -> None:
        header = self.names[f"{what}-header-name"]
        if header:
            context.response_headers.append((header, str(remaining)))
        self._set_variable(context, what, remaining)

    def _set_variable(self, context: Context, what: str, value: int) -> None:
        name = self.names[f"{what}-variable-name"]
        if name:
            context.Variables.set(name, value)

    def _refuse(self, context: Context, window: Window, status: int, reason: str, text: str) -> None:
        retry_after = window.seconds_left()
        variable = self.names["retry-after-variable-name"]
        if variable:
            context.Variables.set(variable, retry_after)
        message = f"{text}. Try again in {retry_after} seconds."
        header = self.names["retry-after-header-name"] or "Retry-After"
        raise PolicyError(self.element, reason, message, PolicyResponse.error(status, message, {header: str(retry_after)}))


def _constant(value: Value | None) -> str | None:
    return None if value is None else str(value.constant)
