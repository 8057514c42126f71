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
from policies.statement import Loader, Settings, Statement, attr, register
from policies.usage import Usage
from policies.xml import PolicyElement


class TokenLimitSettings(Settings):
    counter_key: Value = attr()
    tokens_per_minute: Value | None = attr(kind=int, minimum=1)
    token_quota: Value | None = attr(kind=int, minimum=1)
    token_quota_period: Value | None = attr(choices=QUOTA_PERIODS)
    estimate_prompt_tokens: bool = attr()
    retry_after_header_name: str | None = attr()
    retry_after_variable_name: str | None = attr()
    remaining_quota_tokens_header_name: str | None = attr()
    remaining_quota_tokens_variable_name: str | None = attr()
    remaining_tokens_header_name: str | None = attr()
    remaining_tokens_variable_name: str | None = attr()
    tokens_consumed_header_name: str | None = attr()
    tokens_consumed_variable_name: str | None = attr()
    #: The 2024 names of the two above.
    consumed_tokens_header_name: str | None = attr()
    consumed_tokens_variable_name: str | None = attr()


@register
class TokenLimit(Statement):
    element = "azure-openai-token-limit"
    aliases = ("llm-token-limit",)
    sections = frozenset({"inbound"})

    def __init__(self, settings: TokenLimitSettings) -> None:
        self.counter_key = settings.counter_key
        self.tokens_per_minute = settings.tokens_per_minute
        self.token_quota = settings.token_quota
        self.quota_period = settings.token_quota_period
        self.estimate_prompt = settings.estimate_prompt_tokens
        #: Header and variable names by what they report ("remaining-tokens", "tokens-consumed", …).
        self.headers: dict[str, str | None] = {
            "remaining-tokens": settings.remaining_tokens_header_name,
            "remaining-quota-tokens": settings.remaining_quota_tokens_header_name,
            "tokens-consumed": settings.tokens_consumed_header_name or settings.consumed_tokens_header_name,
        }
        self.variables: dict[str, str | None] = {
            "remaining-tokens": settings.remaining_tokens_variable_name,
            "remaining-quota-tokens": settings.remaining_quota_tokens_variable_name,
            "tokens-consumed": settings.tokens_consumed_variable_name or settings.consumed_tokens_variable_name,
        }
        self.retry_after_header = settings.retry_after_header_name or "Retry-After"
        self.retry_after_variable = settings.retry_after_variable_name

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> TokenLimit:
        loader.children(element, ())
        settings = loader.settings(element, TokenLimitSettings)
        if settings.tokens_per_minute is None and settings.token_quota is None:
            raise loader.fail(element, "Set tokens-per-minute, token-quota with token-quota-period, or both.")
        if (settings.token_quota is None) != (settings.token_quota_period is None):
            raise loader.fail(element, "token-quota and token-quota-period go together.")
        return cls(settings)

    async def run(self, context: Context) -> None:
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
            header = self.headers["tokens-consumed"]
            if header:
                context.response_headers.append((header, str(used)))

        context.usage_listeners.append(settle)

    def _publish(self, context: Context, what: str, remaining: int) -> None:
        header = self.headers[what]
        if header:
            context.response_headers.append((header, str(remaining)))
        self._set_variable(context, what, remaining)

    def _set_variable(self, context: Context, what: str, value: int) -> None:
        name = self.variables[what]
        if name:
            context.Variables.set(name, value)

    def _refuse(self, context: Context, window: Window, status: int, reason: str, text: str) -> None:
        retry_after = window.seconds_left()
        if self.retry_after_variable:
            context.Variables.set(self.retry_after_variable, retry_after)
        message = f"{text}. Try again in {retry_after} seconds."
        headers = {self.retry_after_header: str(retry_after)}
        raise PolicyError(self.element, reason, message, PolicyResponse.error(status, message, headers))
