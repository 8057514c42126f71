"""The operator dashboard: rollups and refusals in the metrics tables, the page in headless Chromium, its login."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from starlette.requests import Request

from gateway.cli.usage_report import summarize as usage_summary
from gateway.ops.dashboard import render
from gateway.ops.dashboard_data import WINDOWS, aggregate, summarize
from gateway.stores.metric_rows import METRIC_FIELDS
from gateway.stores.metrics import MetricsRecorder
from policies.usage import Usage
from tests import browser
from tests.conftest import API_VERSION, GatewayProcess, Keys
from tests.stack_helpers import apply, metric_rows, number, token_env

ADMIN_KEY = "admin-" + secrets.token_hex(12)
POLICY = """<policies><inbound><base />
  <azure-openai-emit-token-metric namespace="dash"><dimension name="Subscription ID" /></azure-openai-emit-token-metric>
  <choose>
    <when condition="@(context.Request.Headers.GetValueOrDefault(&quot;x-limit&quot;, &quot;&quot;) == &quot;rate&quot;)">
      <azure-openai-token-limit counter-key="@(context.Subscription.Id)" tokens-per-minute="50" estimate-prompt-tokens="true" />
    </when>
    <when condition="@(context.Request.Headers.GetValueOrDefault(&quot;x-limit&quot;, &quot;&quot;) == &quot;quota&quot;)">
      <azure-openai-token-limit counter-key="@(context.Subscription.Id)" token-quota="50" token-quota-period="Hourly" estimate-prompt-tokens="true" />
    </when>
  </choose>
</inbound></policies>"""


def field_of(entity: dict, field: str) -> int:
    return number(entity.get(field, 0))


# --- buckets and sums -------------------------------------------------------------------------------------------


def test_windows_cover_the_last_hour_day_and_month_in_their_own_partitions() -> None:
    now = datetime(2026, 11, 26, 10, 30, 15, tzinfo=UTC)
    hour, day, month = (WINDOWS[name].periods(now) for name in ("1h", "24h", "30d"))
    assert (hour[0][0], hour[-1][0], len(hour)) == ("m202611260931", "m202611261030", 60)
    assert (day[0][0], day[-1][0], len(day)) == ("h2026112511", "h2026112610", 24)
    assert (month[0][0], month[-1][0], len(month)) == ("d20261028", "d20261126", 30)


def test_aggregate_sums_rows_per_bucket_subscription_and_deployment() -> None:
    window = WINDOWS["1h"]
    periods = window.periods(datetime(2026, 11, 26, 10, 30, tzinfo=UTC))
    zero = dict.fromkeys(METRIC_FIELDS, 0)
    rows = [
        {**zero, "PartitionKey": "m202611261030", "subscription": "a", "deployment": "gpt-4o", "total": 10, "requests": 1},
        {**zero, "PartitionKey": "m202611261030", "subscription": "a", "deployment": "gpt-4o", "total": 5, "requests": 1},  # another instance
        {**zero, "PartitionKey": "m202611261029", "subscription": "b", "deployment": "mini", "total": 7, "requests": 2, "cacheHits": 1},
        {**zero, "PartitionKey": "m202611261029", "subscription": "c", "deployment": "", "refused429": 3},
        {**zero, "PartitionKey": "m202611260900", "subscription": "a", "deployment": "gpt-4o", "total": 99},  # outside the window
    ]
    summary = aggregate(window, periods, rows)
    assert summary.rows_read == 4 and summary.totals["total"] == 22 and summary.totals["refused429"] == 3
    assert summary.subscriptions.tokens["a"][-1] == 15 and summary.subscriptions.tokens["b"][-2] == 7
    assert summary.subscriptions.ranked() == ["a", "b", "c"]  # c has no tokens but refusals: still listed
    assert summary.deployments.totals["mini"]["cacheHits"] == 1 and summary.cache_hit_rate == pytest.approx(1 / 4)


def test_page_escapes_what_clients_control_and_has_no_script() -> None:
    window = WINDOWS["24h"]
    periods = window.periods(datetime.now(UTC))
    evil = "<script>alert(1)</script>"
    rows = [{**dict.fromkeys(METRIC_FIELDS, 0), "PartitionKey": periods[-1][0], "subscription": "s", "deployment": evil, "total": 3}]
    page = render(aggregate(window, periods, rows), [], {"s": '"><img src=x>'}, {})
    assert "<script" not in page and "&lt;script&gt;" in page and "<img" not in page


# --- rollups written by the metrics flush ------------------------------------------------------------------------


@pytest.fixture
async def tables(scratch_tables):  # type: ignore[no-untyped-def]
    """A metrics table and a rollup table."""
    return [await scratch_tables("m"), await scratch_tables("r")]


async def test_a_month_of_traffic_reads_30_daily_rows_per_series_and_matches_the_minute_rows(tables) -> None:  # type: ignore[no-untyped-def]
    minutes, rollups = tables
    now = datetime.now(UTC)
    clock = [0.0]
    recorder = MetricsRecorder(minutes, rollups=rollups, instance="bench", clock=lambda: clock[0])
    series = [("sub-a", "gpt-4o"), ("sub-a", "mini"), ("sub-b", "gpt-4o")]
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=29)  # the first day of the 30-day window
    moments = [start + timedelta(hours=5 * i) for i in range(int((now - start).total_seconds() // (5 * 3600)) + 1)]
    for moment in moments:
        clock[0] = moment.timestamp()
        for index, (subscription, deployment) in enumerate(series):
            recorder.record("ns", [], Usage(prompt=index + 1, completion=2, total=index + 3), subscription, deployment)
        recorder.record_refusal(429, "sub-b", "gpt-4o")
        recorder.record_refusal(500, "sub-b", "gpt-4o")  # not a refusal
        await recorder.flush()

    month = await summarize(rollups, WINDOWS["30d"], now)
    assert month.rows_read <= 30 * (len(series) + 1)  # one row per day and series (+ the refusal series), however long
    assert month.totals["requests"] == len(moments) * len(series)
    assert month.totals["refused429"] == len(moments) and month.totals["refused403"] == 0
    assert month.subscriptions.totals["sub-a"]["total"] == len(moments) * (3 + 4)
    exact = {row["group"]: row for row in await usage_summary(minutes, start, "subscription")}
    for subscription in ("sub-a", "sub-b"):
        for name in METRIC_FIELDS:
            assert month.subscriptions.totals[subscription][name] == exact[subscription][name], (subscription, name)
    day = await summarize(rollups, WINDOWS["24h"], now)
    recent = [m for m in moments if m >= now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)]
    assert day.rows_read <= 24 * (len(series) + 1) and day.totals["requests"] == len(recent) * len(series)


# --- the page, served by a gateway that has seen traffic ---------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard_gateway(
    start_gateway: Callable[[dict[str, str]], GatewayProcess],
    gateway_env: dict[str, str],
    create_subscription: Callable[..., Keys],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[GatewayProcess, dict[str, str], Keys, Keys]:
    env = token_env(gateway_env, GATEWAY_ADMIN_KEY=ADMIN_KEY)
    alpha, beta = create_subscription("alpha", env=env), create_subscription("beta", env=env)
    apply(env, POLICY, tmp_path_factory.mktemp("dashboard"))
    gateway = start_gateway(env)
    chat = f"{gateway.url}/openai/deployments/{{}}/chat/completions"

    def call(keys: Keys, deployment: str, limit: str = "", max_tokens: int = 20) -> int:
        body = {"messages": [{"role": "user", "content": "one two three"}], "max_tokens": max_tokens}
        response = httpx.post(
            chat.format(deployment), params={"api-version": API_VERSION}, headers={"api-key": keys.primary, "x-limit": limit}, json=body
        )
        return response.status_code

    assert [call(alpha, "gpt-4o") for _ in range(3)] == [200] * 3
    embeddings = f"{gateway.url}/openai/deployments/text-embedding-3-small/embeddings"
    assert httpx.post(embeddings, params={"api-version": API_VERSION}, headers={"api-key": alpha.primary}, json={"input": "a b"}).status_code == 200
    assert [call(beta, "gpt-4o-mini") for _ in range(2)] == [200, 200]
    assert call(beta, "gpt-4o-mini", "rate", max_tokens=500) == 429  # the reservation alone exceeds 50 tokens per minute
    assert call(beta, "gpt-4o-mini", "quota", max_tokens=500) == 403
    deadline = time.monotonic() + 10
    while sum(field_of(r, "refused403") for r in metric_rows(env)) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    return gateway, env, alpha, beta


def expected_by(env: dict[str, str], column: str) -> dict[str, dict[str, int]]:
    """What the minute rows say, summed per subscription or deployment: the truth the page must show."""
    sums: dict[str, dict[str, int]] = {}
    for row in metric_rows(env):
        group = sums.setdefault(row[column], dict.fromkeys(METRIC_FIELDS, 0))
        for name in METRIC_FIELDS:
            group[name] += field_of(row, name)
    return sums


def dashboard_url(gateway: GatewayProcess, window: str) -> str:
    return f"{gateway.url}/ops/dashboard?window={window}&key={ADMIN_KEY}"


@pytest.mark.parametrize("window", ["1h", "24h", "30d"])
def test_page_in_chromium_shows_the_numbers_of_the_metrics_table(dashboard_gateway: tuple, window: str) -> None:
    gateway, env, alpha, beta = dashboard_gateway
    dom = browser.Elements(browser.dump_dom(dashboard_url(gateway, window)))
    by_subscription, by_deployment = expected_by(env, "subscription"), expected_by(env, "deployment")
    assert set(by_subscription) == {alpha.subscription.id, beta.subscription.id}
    totals = dom.by_id("totals")
    assert totals["data-window"] == window
    for name in METRIC_FIELDS:
        attribute = "data-" + "".join(f"-{c.lower()}" if c.isupper() else c for c in name)
        assert int(totals[attribute]) == sum(group[name] for group in by_subscription.values()), name
    shown = {row["data-subscription"]: row for row in dom.with_attribute("data-subscription")}
    assert set(shown) == set(by_subscription)
    for subscription, values in by_subscription.items():
        row = shown[subscription]
        assert (int(row["data-total"]), int(row["data-requests"])) == (values["total"], values["requests"])
        assert (int(row["data-refused429"]), int(row["data-refused403"])) == (values["refused429"], values["refused403"])
    assert int(shown[beta.subscription.id]["data-refused429"]) == 1 and int(shown[beta.subscription.id]["data-refused403"]) == 1
    deployments = {row["data-deployment"]: int(row["data-total"]) for row in dom.with_attribute("data-deployment")}
    assert deployments == {name: values["total"] for name, values in by_deployment.items()}
    bars = dom.with_attribute("data-series")
    chart_total = sum(int(bar["data-tokens"]) for bar in bars if bar.get("data-bucket"))
    assert chart_total == 2 * int(totals["data-total"])  # each of the two charts stacks every token
    (backend,) = dom.with_attribute("data-backend")
    assert (backend["data-backend"], backend["data-state"], backend["data-available"]) == ("sim", "closed", "true")


def test_screenshot_of_the_page_is_kept_as_an_artifact(dashboard_gateway: tuple) -> None:
    gateway, *_ = dashboard_gateway
    path = browser.screenshot(dashboard_url(gateway, "1h"), "dashboard.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_login_form_sets_a_session_cookie_and_the_page_needs_the_key(dashboard_gateway: tuple, gateway: GatewayProcess) -> None:
    dashboard_gateway_process = dashboard_gateway[0]
    url = f"{dashboard_gateway_process.url}/ops/dashboard"
    assert httpx.get(f"{gateway.url}/ops/dashboard").status_code == 404  # no GATEWAY_ADMIN_KEY: no dashboard
    login = httpx.get(url)
    assert login.status_code == 401 and '<form method="post"' in login.text and "data-total" not in login.text
    assert httpx.post(url, data={"key": ADMIN_KEY + "x"}).status_code == 401
    signed_in = httpx.post(url, data={"key": ADMIN_KEY, "window": "1h"})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/ops/dashboard?window=1h"
    cookie = signed_in.cookies["gateway-admin"]
    assert ADMIN_KEY not in cookie and "httponly" in signed_in.headers["set-cookie"].lower()
    page = httpx.get(url, params={"window": "1h"}, cookies={"gateway-admin": cookie})
    assert page.status_code == 200 and 'id="totals"' in page.text and "<script" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"] and "tables;dur=" in page.headers["server-timing"]
    assert httpx.get(url, headers={"x-admin-key": ADMIN_KEY}).status_code == 200
    assert httpx.get(url, params={"window": "7y"}, headers={"x-admin-key": ADMIN_KEY}).status_code == 400
    assert httpx.get(f"{dashboard_gateway_process.url}/ops/backends", cookies={"gateway-admin": cookie}).status_code == 200


async def test_the_functions_handler_serves_the_page_to_an_admin(functions_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import function_app
    from gateway.hosts import local as hosting

    monkeypatch.setenv("GATEWAY_ADMIN_KEY", ADMIN_KEY)

    def request(headers: dict[str, str]) -> Request:
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        return Request({"type": "http", "method": "GET", "scheme": "https", "path": "/ops/dashboard", "query_string": b"window=1h", "headers": raw})

    try:
        assert (await function_app.http_functions["ops_dashboard"](request({}))).status_code == 401
        page = await function_app.http_functions["ops_dashboard"](request({"x-admin-key": ADMIN_KEY}))
        assert page.status_code == 200 and b'id="totals"' in page.body
    finally:
        await hosting.current_gateway().close()
