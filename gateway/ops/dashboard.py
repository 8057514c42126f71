"""`GET /ops/dashboard`: who spends what, who is turned away, what the cache saves, how the backends are doing.

One server-rendered HTML page with inline SVG charts: no script, no CDN, nothing fetched after the page, so
it works from a locked-down network and under a strict Content-Security-Policy. It is an `/ops` route: the
admin key (`GATEWAY_ADMIN_KEY`) opens it in header `x-admin-key`, query parameter `key`, or through the
login form it shows a browser without one (`POST /ops/dashboard`, which sets an HttpOnly cookie holding a
signed session token, gateway/ops/sessions.py; the page's Sign out button revokes it). Sign-in and sign-out are
accepted from this gateway's own page only (`Sec-Fetch-Site`/`Origin`). Numbers carry `data-*` attributes so
scripts and tests can read them from the DOM.
"""

from __future__ import annotations

import asyncio
import html
import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gateway.backends.health_sync import backend_status
from gateway.errors import ResourceNotFound, error_response
from gateway.ops import admin
from gateway.ops.dashboard_data import DEFAULT_WINDOW, WINDOWS, Breakdown, Summary, refusals, summarize
from gateway.ops.sessions import SESSION_SECONDS
from gateway.stores.metric_rows import ROLLUP_TABLE

if TYPE_CHECKING:
    from gateway.handling.gateway import Gateway

PATH = "/ops/dashboard"
#: Series drawn in a chart; the rest are summed as "other".
TOP_SERIES = 6
#: Rows in the subscriptions and deployments tables.
TOP_ROWS = 25
#: A sign-in form holds a key and a window name: anything longer is not one.
MAX_FORM_BYTES = 4096
_COLORS = ("#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#94a3b8")
_TIME_FORMATS = {"1h": "%H:%M", "24h": "%H:00", "30d": "%m-%d"}
_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


async def dashboard_response(gateway: Gateway, request: Request) -> Response:
    """The page for an admin; the login form for a browser without a session; 404 when no admin key is set."""
    if request.method == "POST":
        return await _post(gateway, request)
    window_name = request.query_params.get("window", DEFAULT_WINDOW)
    refused = await admin.refuse(gateway, request)
    if refused is not None:
        tried = request.headers.get(admin.ADMIN_KEY_HEADER) or request.query_params.get(admin.ADMIN_KEY_QUERY)
        return refused if refused.status_code == 404 else _refused_page(window_name, refused, bool(tried))
    window = WINDOWS.get(window_name)
    if window is None:
        return error_response(400, "400", f"Unknown window: use window={', window='.join(WINDOWS)}.")
    started = time.perf_counter()
    summary, backends, names = await asyncio.gather(
        summarize(gateway.store.table(ROLLUP_TABLE), window),
        backend_status(gateway.store, gateway.settings.backends),
        _subscription_names(gateway),
    )
    read = time.perf_counter() - started
    page = render(summary, backends, names, _key_query(request))
    rendered = time.perf_counter() - started - read
    response = HTMLResponse(page, headers=_HEADERS)
    response.headers["server-timing"] = f"tables;dur={read * 1000:.2f}, render;dur={rendered * 1000:.2f}"
    return response


async def _post(gateway: Gateway, request: Request) -> Response:
    """The sign-in form (`key`) or the sign-out button (`action=logout`), from this gateway's own pages only."""
    if gateway.settings.admin_key is None:
        return ResourceNotFound().to_response()
    if _cross_site(gateway, request):
        return error_response(403, "403", "Sign-in and sign-out are accepted from this gateway's own dashboard page only.")
    form = await _form(request)
    if form is None:
        return error_response(413, "413", f"The form is larger than {MAX_FORM_BYTES} bytes.")
    window = form.get("window", [DEFAULT_WINDOW])[0]
    back = f"{PATH}?{urlencode({'window': window if window in WINDOWS else DEFAULT_WINDOW})}"
    secure = admin.public_origin(gateway, request)[0] == "https"
    if form.get("action") == ["logout"]:
        return await _logout(gateway, request, back, secure)
    refused = admin.check_key(gateway, request, form.get("key", [""])[0])
    if refused is not None:
        return _refused_page(window, refused, tried=True)
    tokens = admin.session_tokens(gateway)
    assert tokens is not None
    response = RedirectResponse(back, status_code=303)
    response.set_cookie(
        admin.ADMIN_COOKIE, tokens.issue(time.time()), max_age=SESSION_SECONDS, path="/ops",
        secure=secure, httponly=True, samesite="strict",
    )  # fmt: skip
    return response


async def _logout(gateway: Gateway, request: Request, back: str, secure: bool) -> Response:
    """Revoke the request's session on every instance and clear the cookie."""
    found = await admin.session(gateway, request)
    if found is not None:
        try:
            await admin.denylist(gateway).revoke(found)
        except Exception:
            return error_response(503, "503", "The sign-out could not be recorded. Try again.", {"Retry-After": "5"})
    response = RedirectResponse(back, status_code=303)
    response.delete_cookie(admin.ADMIN_COOKIE, path="/ops", secure=secure, httponly=True, samesite="strict")
    return response


def _cross_site(gateway: Gateway, request: Request) -> bool:
    """True for a form posted from another site (login CSRF): `Sec-Fetch-Site`, else `Origin`, must say same origin.

    A request with neither header (curl, scripts) is no browser acting for someone else, and is accepted.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    scheme, host = admin.public_origin(gateway, request)
    return origin.lower() != f"{scheme}://{host}".lower()


async def _form(request: Request) -> dict[str, list[str]] | None:
    """The urlencoded form, read up to `MAX_FORM_BYTES` (None beyond)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return parse_qs(body.decode("utf-8", "replace"))


def _refused_page(window: str, refused: Response, tried: bool) -> Response:
    """The login form (again), with why: a wrong key (401) or too many of them from this address (429)."""
    if refused.status_code == 429:
        message = "Too many wrong admin keys from this address. Try again later."
        return _login_page(window, 429, message, {"Retry-After": refused.headers["retry-after"]})
    message = "That is not the admin key. It is the GATEWAY_ADMIN_KEY setting of this gateway." if tried else ""
    return _login_page(window, refused.status_code, message)


async def _subscription_names(gateway: Gateway) -> dict[str, str]:
    return {sub.id: sub.name for sub in await (gateway.subscriptions).list()}


def _key_query(request: Request) -> dict[str, str]:
    """Keep `?key=` on the page's own links when that is how the admin opened it."""
    key = request.query_params.get(admin.ADMIN_KEY_QUERY)
    return {admin.ADMIN_KEY_QUERY: key} if key else {}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _page(title: str, body: str, refresh: bool = False) -> str:
    meta = '<meta http-equiv="refresh" content="60">' if refresh else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{_e(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>"
    )


def _login_page(window: str, status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    note = f'<p class="error" id="login-error">{_e(message)}</p>' if message else ""
    body = (
        '<main class="login"><h1>Gateway dashboard</h1>'
        "<p>Sign in with the gateway's admin key (the <code>GATEWAY_ADMIN_KEY</code> setting).</p>"
        f'{note}<form method="post" action="{PATH}"><input type="hidden" name="window" value="{_e(window)}">'
        '<label>Admin key <input type="password" name="key" autocomplete="current-password" required autofocus></label>'
        "<button type=submit>Sign in</button></form></main>"
    )
    return HTMLResponse(_page("Gateway dashboard: sign in", body), status_code=status, headers={**_HEADERS, **(headers or {})})


def render(summary: Summary, backends: Sequence[Mapping[str, Any]], names: Mapping[str, str], key_query: Mapping[str, str]) -> str:
    """The whole page as HTML: totals, two stacked-bar charts, the top tables and the backends."""
    window = summary.window
    nav = " ".join(
        f'<a href="{PATH}?{_e(urlencode({"window": name, **key_query}))}"{" aria-current=page" if name == window.name else ""}>{_e(other.label)}</a>'
        for name, other in WINDOWS.items()
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    body = (
        f'<header><h1>GenAI gateway</h1><nav>{nav}</nav><span class="muted">{_e(generated)}; refreshes every minute</span>'
        f'<form method="post" action="{PATH}" id="sign-out"><input type="hidden" name="action" value="logout">'
        f'<input type="hidden" name="window" value="{_e(window.name)}"><button type="submit">Sign out</button></form></header>'
        f"{_totals(summary)}"
        f"<section><h2>Tokens per minute by subscription, {_e(window.label)}</h2>{_chart('chart-subscriptions', summary, summary.subscriptions, names)}</section>"
        f"<section><h2>Tokens per minute by deployment, {_e(window.label)}</h2>{_chart('chart-deployments', summary, summary.deployments, {})}</section>"
        f"<section><h2>Top subscriptions</h2>{_table('subscriptions', 'subscription', summary.subscriptions, names)}</section>"
        f"<section><h2>Deployments</h2>{_table('deployments', 'deployment', summary.deployments, {})}</section>"
        f"<section><h2>Backends</h2>{_backends(backends)}</section>"
        f'<footer class="muted">{summary.rows_read} rollup rows read. Buckets are UTC; the last one is '
        "still filling. Refusals are 429 (rate or token limit) and 403 (quota) answers of policies.</footer>"
    )
    return _page(f"Gateway dashboard, {window.label}", body, refresh=True)


def _totals(summary: Summary) -> str:
    totals = summary.totals
    rate = summary.cache_hit_rate
    per_minute = totals["total"] / (summary.window.bucket_minutes * len(summary.periods))
    tiles = [
        ("Tokens", _n(totals["total"]), f"{_n(totals['prompt'])} prompt, {_n(totals['completion'])} completion"),
        ("Tokens per minute", _n(per_minute), "average over the window"),
        ("Requests", _n(totals["requests"]), f"{_n(totals['estimated'])} with estimated counts"),
        ("Refused 429", _n(totals["refused429"]), "rate and token limits"),
        ("Refused 403", _n(totals["refused403"]), "quotas"),
        ("Cache hit rate", "–" if rate is None else f"{rate:.1%}", f"{_n(totals['cacheHits'])} hits"),
        ("Tokens saved", _n(totals["savedTokens"]), "answered from the semantic cache"),
    ]
    attributes = " ".join(f'data-{_attribute(name)}="{value}"' for name, value in totals.items())
    rate_attribute = "" if rate is None else f' data-cache-hit-rate="{rate:.6f}"'
    cells = "".join(
        f'<div class="tile"><div class="label">{_e(a)}</div><div class="value">{_e(b)}</div><div class="muted">{_e(c)}</div></div>'
        for a, b, c in tiles
    )
    return f'<section id="totals" class="tiles" data-window="{_e(summary.window.name)}" data-rows="{summary.rows_read}" {attributes}{rate_attribute}>{cells}</section>'


def _attribute(field: str) -> str:
    """`cacheHits` -> `cache-hits`, so `dataset.cacheHits` reads it back in a browser."""
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in field)


def _label(group: str, names: Mapping[str, str]) -> str:
    if not group:
        return "(none)"
    name = names.get(group)
    return f"{name} ({group[:8]})" if name else group


def _chart(chart_id: str, summary: Summary, breakdown: Breakdown, names: Mapping[str, str]) -> str:
    """A stacked bar per bucket, in tokens per minute; the largest series by tokens, the rest as "other"."""
    buckets = len(summary.periods)
    ranked = [group for group in breakdown.ranked() if breakdown.totals[group]["total"] > 0]
    series: list[tuple[str, str, list[int]]] = [(group, _label(group, names), breakdown.tokens[group]) for group in ranked[:TOP_SERIES]]
    if len(ranked) > TOP_SERIES:
        others = ranked[TOP_SERIES:]
        series.append(("(other)", f"{len(others)} others", [sum(breakdown.tokens[g][i] for g in others) for i in range(buckets)]))
    if not series:
        return f'<p id="{chart_id}" class="empty">No token usage in this window. Is an emit-token-metric policy applied?</p>'
    width, height, left, right, top, bottom = 960, 220, 64, 8, 8, 24
    plot_width, plot_height = width - left - right, height - top - bottom
    minutes = summary.window.bucket_minutes
    stacked = [sum(tokens[i] for _, _, tokens in series) / minutes for i in range(buckets)]
    scale_max = _nice(max(stacked))
    bar = plot_width / buckets
    parts = [f'<svg id="{chart_id}" viewBox="0 0 {width} {height}" role="img" aria-label="tokens per minute">']
    for fraction in (0, 0.5, 1):
        y = top + plot_height * (1 - fraction)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_n(scale_max * fraction)}</text>')
    time_format = _TIME_FORMATS[summary.window.name]
    step = max(1, buckets // 6)
    for i, (partition, start) in enumerate(summary.periods):
        x = left + i * bar
        base = 0.0
        for color, (group, label, tokens) in zip(_COLORS, series):
            if tokens[i] == 0:
                continue
            rate = tokens[i] / minutes
            h = plot_height * rate / scale_max
            y = top + plot_height * (1 - (base + rate) / scale_max)
            when = start.strftime(time_format)
            parts.append(
                f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(bar - 1, 0.5):.1f}" height="{h:.1f}" fill="{color}" '
                f'data-series="{_e(group)}" data-bucket="{_e(partition)}" data-tokens="{tokens[i]}">'
                f"<title>{_e(label)}, {_e(when)}: {_n(tokens[i])} tokens ({_n(rate)}/min)</title></rect>"
            )
            base += rate
        if i % step == 0 or i == buckets - 1:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - 6}" text-anchor="middle">{_e(start.strftime(time_format))}</text>')
    parts.append("</svg>")
    legend = "".join(f'<li><span class="swatch" style="background:{color}"></span>{_e(label)}</li>' for color, (_, label, _) in zip(_COLORS, series))
    return "".join(parts) + f'<ul class="legend">{legend}</ul>'


def _nice(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above `value`, so the axis reads well."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def _table(table_id: str, kind: str, breakdown: Breakdown, names: Mapping[str, str]) -> str:
    ranked = breakdown.ranked()
    if not ranked:
        return f'<p id="{table_id}" class="empty">Nothing recorded in this window.</p>'
    grand = sum(values["total"] for values in breakdown.totals.values()) or 1
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            kind.capitalize(),
            "Tokens",
            "Share",
            "Prompt",
            "Completion",
            "Requests",
            "Refused 429",
            "Refused 403",
            "Cache hits",
            "Tokens saved",
        )
    )
    rows = []
    for group in ranked[:TOP_ROWS]:
        values = breakdown.totals[group]
        attributes = " ".join(f'data-{_attribute(name)}="{value}"' for name, value in values.items())
        share = values["total"] / grand
        cells = [
            f"<td>{_e(_label(group, names))}</td>", f"<td>{_n(values['total'])}</td>",
            f'<td><span class="share" style="width:{share * 80:.0f}px"></span> {share:.0%}</td>',
            *(f"<td>{_n(values[name])}</td>" for name in ("prompt", "completion", "requests", "refused429", "refused403", "cacheHits", "savedTokens")),
        ]  # fmt: skip
        flagged = ' class="refused"' if refusals(values) else ""
        rows.append(f'<tr data-{kind}="{_e(group)}" {attributes}{flagged}>{"".join(cells)}</tr>')
    more = len(ranked) - TOP_ROWS
    caption = f"<caption>{more} more not shown</caption>" if more > 0 else ""
    return f'<table id="{table_id}">{caption}<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _backends(report: Sequence[Mapping[str, Any]]) -> str:
    singles = [entry for entry in report if entry["type"] == "backend"]
    if not singles:
        return '<p id="backends" class="empty">No backends configured (GATEWAY_BACKENDS or AZURE_OPENAI_ENDPOINT).</p>'
    slowest = max((entry["latencyP50Ms"] or 0 for entry in singles), default=0) or 1
    head = "".join(f"<th>{h}</th>" for h in ("Backend", "State", "p50 latency", "Failures / requests", "Wait until", "Open until", "Instances"))
    rows = []
    for entry in singles:
        latency = entry["latencyP50Ms"]
        bar = "" if latency is None else f'<span class="share" style="width:{80 * latency / slowest:.0f}px"></span> {latency:.1f} ms'
        state = "open" if entry["state"] == "open" else "closed" if entry["available"] else "waiting"
        rows.append(
            f'<tr data-backend="{_e(entry["id"])}" data-state="{_e(entry["state"])}" data-available="{str(entry["available"]).lower()}" '
            f'data-latency-p50-ms="{"" if latency is None else latency}" data-recent-failures="{entry["recentFailures"]}" '
            f'data-recent-requests="{entry["recentRequests"]}"><td>{_e(entry["id"])}</td><td class="state-{_e(state)}">{_e(state)}</td>'
            f"<td>{bar or '–'}</td><td>{entry['recentFailures']} / {entry['recentRequests']}</td><td>{_e(entry['waitUntil'] or '–')}</td>"
            f"<td>{_e(entry['openUntil'] or '–')}</td><td>{entry['instances']}</td></tr>"
        )
    pools = "".join(
        f'<li data-pool="{_e(pool["id"])}" data-state="{_e(pool["state"])}"><b>{_e(pool["id"])}</b> '
        f'<span class="state-{_e(pool["state"])}">{_e(pool["state"])}</span>: '
        + ", ".join(
            f"{_e(m['id'])} (priority {m['priority']}, weight {m['weight']}{'' if m['available'] else ', unavailable'})" for m in pool["members"]
        )
        + "</li>"
        for pool in report
        if pool["type"] == "pool"
    )
    return f'<table id="backends"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>' + (
        f'<ul id="pools">{pools}</ul>' if pools else ""
    )


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:0 auto;max-width:1040px;padding:16px;color:#0f172a;background:#f8fafc}
header{display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}h1{font-size:20px;margin:0}h2{font-size:15px;margin:0 0 8px}
nav a{margin-right:8px;color:#2563eb}nav a[aria-current]{font-weight:600;color:#0f172a;text-decoration:none}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:12px;margin:12px 0}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:8px}.tile .value{font-size:22px;font-weight:600}
.label{color:#475569}.muted{color:#64748b;font-size:12px}.empty{color:#64748b}
svg{width:100%;height:auto}svg text{font-size:11px;fill:#475569}.grid{stroke:#e2e8f0}
.legend{list-style:none;padding:0;margin:6px 0 0;display:flex;flex-wrap:wrap;gap:12px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
table{border-collapse:collapse;width:100%}th,td{text-align:right;padding:4px 6px;border-bottom:1px solid #f1f5f9;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{color:#475569;font-weight:500}tr.refused td:nth-child(7),tr.refused td:nth-child(8){color:#dc2626;font-weight:600}
.share{display:inline-block;height:8px;background:#93c5fd;border-radius:2px;vertical-align:middle}
.state-closed,.state-active{color:#16a34a}.state-open,.state-inactive{color:#dc2626}.state-waiting{color:#d97706}
.login{max-width:420px;margin:80px auto}.login input[type=password]{display:block;width:100%;margin:8px 0;padding:6px}.error{color:#dc2626}
"""
