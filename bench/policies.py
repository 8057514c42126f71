"""The policy stage's cost per request, with a realistic document of 10+ statements, and one whose routing is
computed by a 15-statement `@{ }` block.

    .venv/bin/python -m bench.policies [--requests 20000]

Runs the effective pipeline in-process against a backend stub that answers at once, so what is timed is
the policy engine alone: context construction is included, the backend call is not. Compare with the
empty default document (just <forward-request/>) in the same run. Targets: the realistic document ≤ 30 µs
p50, the block document ≤ 50 µs p50.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from policies import context as ctx
from policies.counters import LocalCounters
from policies.pipeline import Pipeline
from policies.policy_set import compile_policy_set
from policies.statement import Loader
from tests import policy_helpers

REALISTIC = """<policies>
  <inbound>
    <base />
    <check-header name="x-team" failed-check-httpcode="403" failed-check-error-message="Team header required" ignore-case="true" />
    <ip-filter action="allow"><address-range from="10.0.0.0" to="10.255.255.255" /></ip-filter>
    <set-variable name="deployment" value="@(context.Request.MatchedParameters.ContainsKey(&quot;deployment-id&quot;) ? context.Request.MatchedParameters[&quot;deployment-id&quot;] : (string)context.Request.Body?.As&lt;JObject&gt;(preserveContent: true)?[&quot;model&quot;])" />
    <set-variable name="user" value="@(context.Request.Headers.GetValueOrDefault(&quot;x-user-id&quot;, &quot;N/A&quot;))" />
    <rate-limit-by-key calls="1000000" renewal-period="60" counter-key="@(context.Subscription.Id + &quot;-&quot; + context.Variables.GetValueOrDefault&lt;string&gt;(&quot;user&quot;, &quot;&quot;))" remaining-calls-header-name="x-remaining-calls" />
    <choose>
      <when condition="@((string)context.Variables[&quot;deployment&quot;] == &quot;gpt-4o&quot;)"><set-backend-service backend-id="primary" /></when>
      <when condition="@((string)context.Variables[&quot;deployment&quot;] == &quot;gpt-4o-mini&quot;)"><set-backend-service backend-id="secondary" /></when>
      <otherwise><set-backend-service backend-id="primary" /></otherwise>
    </choose>
    <set-header name="x-caller" exists-action="override"><value>@(context.Subscription.Name + "/" + context.Variables.GetValueOrDefault&lt;string&gt;("user", ""))</value></set-header>
    <set-query-parameter name="trace" exists-action="delete" />
    <set-header name="x-forwarded-by" exists-action="override"><value>gateway</value></set-header>
  </inbound>
  <backend>
    <retry condition="@(context.Response.StatusCode == 429 || context.Response.StatusCode == 503)" count="2" interval="0" first-fast-retry="true">
      <forward-request buffer-request-body="true" />
    </retry>
  </backend>
  <outbound>
    <base />
    <set-header name="x-served-region" exists-action="override"><value>@(context.Deployment.Region)</value></set-header>
    <set-header name="x-routed-to" exists-action="override"><value>@((string)context.Variables["deployment"])</value></set-header>
  </outbound>
  <on-error>
    <base />
    <set-header name="x-error" exists-action="override"><value>@(context.LastError.Reason)</value></set-header>
  </on-error>
</policies>"""


#: The realistic document's routing done in one C# block: parse the body, classify, build a JSON summary.
BLOCK = REALISTIC.replace(
    """<set-variable name="user" """,
    """<set-variable name="routing" value="@{
        var body = context.Request.Body.As&lt;JObject&gt;(preserveContent: true);
        var model = (string)body?[&quot;model&quot;] ?? context.Request.MatchedParameters.GetValueOrDefault(&quot;deployment-id&quot;, &quot;&quot;);
        var user = context.Request.Headers.GetValueOrDefault(&quot;x-user-id&quot;, &quot;anonymous&quot;);
        var team = context.Request.Headers.GetValueOrDefault(&quot;x-team&quot;, &quot;none&quot;).ToLowerInvariant();
        int maxTokens = body?[&quot;max_tokens&quot;]?.Value&lt;int&gt;() ?? 256;
        var tier = &quot;standard&quot;;
        if (maxTokens &gt; 4000) { tier = &quot;large&quot;; }
        else if (team == &quot;blue&quot;) { tier = &quot;priority&quot;; }
        var messages = body?[&quot;messages&quot;] as JArray;
        int count = messages == null ? 0 : messages.Count;
        var result = new JObject();
        result[&quot;model&quot;] = model;
        result[&quot;tier&quot;] = tier;
        result[&quot;messages&quot;] = count;
        result[&quot;key&quot;] = $&quot;{context.Subscription.Id}:{team}:{user}&quot;;
        return result.ToString(Newtonsoft.Json.Formatting.None);
    }" />
    <set-variable name="user" """,
)


class InstantBackend:
    def __init__(self) -> None:
        self.counters = LocalCounters()
        self.signing_keys = None

    async def forward(self, context: ctx.Context, timeout: float | None) -> None:
        context.Response = ctx.Response(200, "OK", ctx.Headers([("content-type", "application/json")]), ctx.Body(b"{}"))

    async def managed_identity_token(self, resource: str, client_id: str | None) -> str:
        return "token"


def make_context(services: InstantBackend) -> ctx.Context:
    headers = [("content-type", "application/json"), ("x-team", "blue"), ("x-user-id", "alice")]
    return policy_helpers.make_context(services, headers=headers, product=None)  # type: ignore[arg-type]


def pipeline(xml: str) -> Pipeline:
    loader = Loader(backend_ids=frozenset({"primary", "secondary"}))
    return compile_policy_set({"api:openai": xml}, 1, loader).pipeline(None, "openai", "ChatCompletions_Create")


async def measure(label: str, target: Pipeline, requests: int) -> None:
    services = InstantBackend()
    for _ in range(500):
        assert await target.execute(make_context(services)) is None
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        await target.execute(make_context(services))
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    count = sum(len(section) for section in (target.inbound, target.backend, target.outbound, target.on_error))
    print(
        f"{label:<28} {count:>2} top-level statements  mean {statistics.fmean(samples):7.1f} µs"
        f"  p50 {samples[len(samples) // 2]:7.1f} µs  p99 {samples[int(len(samples) * 0.99)]:7.1f} µs"
    )


async def main(requests: int) -> None:
    await measure("default (forward only)", pipeline("<policies />"), requests)
    await measure("realistic document", pipeline(REALISTIC), requests)
    await measure("realistic + 15-statement block", pipeline(BLOCK), requests)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    asyncio.run(main(parser.parse_args().requests))
