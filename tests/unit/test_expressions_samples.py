"""Policies written the way public APIM GenAI samples write them (Azure-Samples/AI-Gateway labs, the APIM GenAI
gateway toolkit, the APIM policy snippets): the constructs they use, restated in our own documents, loaded and
run through a real pipeline."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from typing import Any

import orjson

from policies.context import Context
from tests.policy_helpers import FakeServices, make_context, pipeline_of


def document(inbound: str, outbound: str = "<base />") -> str:
    return (
        f"<policies><inbound><base />{inbound}</inbound><backend><base /></backend>"
        f"<outbound>{outbound}</outbound><on-error><base /></on-error></policies>"
    )


async def run(xml: str, context: Context | None = None) -> Context:
    context = context or make_context(FakeServices())
    result = await pipeline_of(xml).execute(context)
    assert result is None, result and result.body
    return context


BACKENDS = """
<set-variable name="listBackends" value="@{
    // Backends with a priority; lower wins. Throttled ones wait until retryAfter.
    JArray backends = new JArray();
    backends.Add(new JObject() { { &quot;name&quot;, &quot;east&quot; }, { &quot;priority&quot;, 1 }, { &quot;isThrottling&quot;, true }, { &quot;retryAfter&quot;, DateTime.Now.AddSeconds(30) } });
    backends.Add(new JObject() { { &quot;name&quot;, &quot;west&quot; }, { &quot;priority&quot;, 1 }, { &quot;isThrottling&quot;, false }, { &quot;retryAfter&quot;, DateTime.MinValue }, });
    backends.Add(new JObject() { { &quot;name&quot;, &quot;spare&quot; }, { &quot;priority&quot;, 2 }, { &quot;isThrottling&quot;, false }, { &quot;retryAfter&quot;, DateTime.MinValue } });
    return backends;
}" />
<set-variable name="backendIndex" value="@{
    JArray backends = (JArray)context.Variables[&quot;listBackends&quot;];
    int selectedPriority = Int32.MaxValue;
    List&lt;int&gt; availableBackends = new List&lt;int&gt;();
    for (int i = 0; i &lt; backends.Count; i++)
    {
        JObject backend = (JObject)backends[i];
        if (backend.Value&lt;bool&gt;(&quot;isThrottling&quot;) &amp;&amp; DateTime.Now &gt;= backend.Value&lt;DateTime&gt;(&quot;retryAfter&quot;))
        {
            backend[&quot;isThrottling&quot;] = false;
        }
        if (!backend.Value&lt;bool&gt;(&quot;isThrottling&quot;))
        {
            int backendPriority = backend.Value&lt;int&gt;(&quot;priority&quot;);
            if (backendPriority &lt; selectedPriority) { selectedPriority = backendPriority; availableBackends.Clear(); availableBackends.Add(i); }
            else if (backendPriority == selectedPriority) { availableBackends.Add(i); }
        }
    }
    if (availableBackends.Count == 1) { return availableBackends[0]; }
    return availableBackends.Count &gt; 0 ? availableBackends[new Random().Next(0, availableBackends.Count)] : 0;
}" />
<set-header name="x-backend" exists-action="override">
    <value>@(((JObject)((JArray)context.Variables["listBackends"])[(Int32)context.Variables["backendIndex"]]).Value&lt;string&gt;("name"))</value>
</set-header>
"""


async def test_priority_backend_selection_skips_throttled_backends() -> None:
    context = await run(document(BACKENDS))
    assert context.Variables["backendIndex"] == 1
    assert context.Request.Headers.GetValueOrDefault("x-backend") == "west"


PKCE = """
<set-variable name="codeVerifier" value="@((string)Guid.NewGuid().ToString().Replace(&quot;-&quot;, &quot;&quot;))" />
<set-variable name="codeChallenge" value="@{
    using (var sha256 = System.Security.Cryptography.SHA256.Create())
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes((string)context.Variables.GetValueOrDefault(&quot;codeVerifier&quot;, &quot;&quot;));
        var hash = sha256.ComputeHash(bytes);
        return System.Convert.ToBase64String(hash).TrimEnd('=').Replace('+', '-').Replace('/', '_');
    }
}" />
<set-variable name="code" value="@{
    // the token request's form body: grant_type=…&amp;code=…&amp;code_verifier=…
    var body = context.Request.Body.As&lt;string&gt;(preserveContent: true);
    if (!string.IsNullOrEmpty(body))
    {
        var pairs = body.Split('&amp;');
        foreach (var pair in pairs)
        {
            var keyValue = pair.Split('=');
            if (keyValue.Length == 2 &amp;&amp; keyValue[0] == &quot;code&quot;) { return keyValue[1]; }
        }
    }
    return &quot;&quot;;
}" />
<set-variable name="authData" value="@{
    return new JObject {
        [&quot;challenge&quot;] = (string)context.Variables.GetValueOrDefault(&quot;codeChallenge&quot;, &quot;&quot;),
        [&quot;state&quot;] = System.Net.WebUtility.UrlDecode(context.Request.Url.Query.GetValueOrDefault(&quot;state&quot;, &quot;&quot;)),
        [&quot;redirect&quot;] = Uri.UnescapeDataString(context.Request.Url.Query.GetValueOrDefault(&quot;redirect_uri&quot;, &quot;&quot;))
    }.ToString();
}" />
<set-variable name="matches" value="@(string.Compare((string)context.Variables[&quot;codeChallenge&quot;], JObject.Parse((string)context.Variables[&quot;authData&quot;])[&quot;challenge&quot;].ToString()) == 0)" />
"""


async def test_pkce_challenge_form_parsing_and_state_round_trip() -> None:
    context = make_context(FakeServices())
    context.Request.Body.replace(b"grant_type=authorization_code&code=abc123&code_verifier=xyz")
    context.Request.Url.Query.append("state", "a%20b")
    context.Request.Url.Query.append("redirect_uri", "https%3A%2F%2Fclient%2Fcb")
    await run(document(PKCE), context)
    verifier = context.Variables["codeVerifier"]
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    assert len(verifier) == 32 and context.Variables["codeChallenge"] == expected
    assert context.Variables["code"] == "abc123"
    stored = orjson.loads(context.Variables["authData"])
    assert stored == {"challenge": expected, "state": "a b", "redirect": "https://client/cb"}
    assert "\n" in context.Variables["authData"]  # JObject.ToString() indents, as Newtonsoft does
    assert context.Variables["matches"] is True


SIGNING = """
<set-variable name="now" value="@(new DateTime(2024, 5, 6, 7, 8, 9))" />
<set-header name="Authorization" exists-action="override"><value>@{
    var secretKey = "{{secret}}";
    var region = "us-east-1";
    var service = "bedrock";
    var amzDate = ((DateTime)context.Variables["now"]).ToString("yyyyMMddTHHmmssZ");
    var dateStamp = ((DateTime)context.Variables["now"]).ToString("yyyyMMdd");
    var body = context.Request.Body.As&lt;string&gt;(preserveContent: true);
    string hashedPayload;
    using (var sha256 = System.Security.Cryptography.SHA256.Create())
    {
        hashedPayload = BitConverter.ToString(sha256.ComputeHash(System.Text.Encoding.UTF8.GetBytes(body))).Replace("-", "").ToLowerInvariant();
    }
    var headers = new List&lt;string[]&gt; { new[] { "x-amz-date", amzDate }, new[] { "host", "bedrock.example" }, new[] { "content-type", "application/json" } };
    var ordered = headers.OrderBy(h =&gt; h[0]).ToList();
    var canonicalHeaders = string.Join("\\n", ordered.Select(h =&gt; $"{h[0]}:{h[1].Trim()}")) + "\\n";
    var signedHeaders = string.Join(";", ordered.Select(h =&gt; h[0]));
    var canonicalRequest = $"POST\\n/model/{System.Uri.EscapeDataString("m:1")}/invoke\\n\\n{canonicalHeaders}\\n{signedHeaders}\\n{hashedPayload}";
    string hashedRequest;
    using (var sha256 = System.Security.Cryptography.SHA256.Create())
    {
        hashedRequest = BitConverter.ToString(sha256.ComputeHash(Encoding.UTF8.GetBytes(canonicalRequest))).Replace("-", "").ToLowerInvariant();
    }
    var scope = $"{dateStamp}/{region}/{service}/aws4_request";
    var stringToSign = $"AWS4-HMAC-SHA256\\n{amzDate}\\n{scope}\\n{hashedRequest}";
    byte[] kDate, kRegion, kService, kSigning;
    using (var h1 = new System.Security.Cryptography.HMACSHA256(Encoding.UTF8.GetBytes("AWS4" + secretKey))) { kDate = h1.ComputeHash(Encoding.UTF8.GetBytes(dateStamp)); }
    using (var h2 = new HMACSHA256(kDate)) { kRegion = h2.ComputeHash(Encoding.UTF8.GetBytes(region)); }
    using (var h3 = new HMACSHA256(kRegion)) { kService = h3.ComputeHash(Encoding.UTF8.GetBytes(service)); }
    using (var h4 = new HMACSHA256(kService)) { kSigning = h4.ComputeHash(Encoding.UTF8.GetBytes("aws4_request")); }
    string signature;
    using (var hmac = new HMACSHA256(kSigning)) { signature = BitConverter.ToString(hmac.ComputeHash(Encoding.UTF8.GetBytes(stringToSign))).Replace("-", "").ToLowerInvariant(); }
    return $"AWS4-HMAC-SHA256 Credential=AKID/{scope}, SignedHeaders={signedHeaders}, Signature={signature}";
}</value></set-header>
"""


def expected_signature(body: bytes, secret: str) -> str:
    amz_date, date = "20240506T070809Z", "20240506"
    headers = sorted([("x-amz-date", amz_date), ("host", "bedrock.example"), ("content-type", "application/json")])
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in headers)
    signed = ";".join(k for k, _ in headers)
    request = f"POST\n/model/m%3A1/invoke\n\n{canonical_headers}\n{signed}\n{hashlib.sha256(body).hexdigest()}"
    scope = f"{date}/us-east-1/bedrock/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
    key = f"AWS4{secret}".encode()
    for part in (date, "us-east-1", "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"AWS4-HMAC-SHA256 Credential=AKID/{scope}, SignedHeaders={signed}, Signature={signature}"


async def test_request_signing_block_matches_a_reference_signature() -> None:
    from policies.statement import Loader

    services = FakeServices()
    context = make_context(services)
    xml = document(SIGNING)
    pipeline = pipeline_of(xml, Loader(named_values={"secret": "wJalrXUtnFEMI"}, backend_ids=frozenset({"primary"})))
    assert await pipeline.execute(context) is None
    sent = dict((k.lower(), v) for k, v in services.forwarded[0]["headers"])
    assert sent["authorization"] == expected_signature(context.Request.Body.content, "wJalrXUtnFEMI")


LOG = """<set-variable name="entry" value="@{
    var requestBody = context.Request.Body.As&lt;string&gt;(preserveContent: true);
    var responseBody = context.Response.Body?.As&lt;JObject&gt;(preserveContent: true);
    return new JObject(
        new JProperty(&quot;id&quot;, responseBody?[&quot;id&quot;]?.ToString() ?? Guid.NewGuid().ToString()),
        new JProperty(&quot;model&quot;, responseBody?[&quot;model&quot;]?.ToString() ?? &quot;NA&quot;),
        new JProperty(&quot;region&quot;, context.Response.Headers.GetValueOrDefault(&quot;x-ms-region&quot;, &quot;N/A&quot;)),
        new JProperty(&quot;clientIp&quot;, context.Request?.IpAddress ?? &quot;NA&quot;),
        new JProperty(&quot;operation&quot;, context.Operation?.Name ?? &quot;NA&quot;),
        new JProperty(&quot;request&quot;, requestBody),
        new JProperty(&quot;promptTokens&quot;, responseBody?[&quot;usage&quot;]?[&quot;prompt_tokens&quot;]?.ToString() ?? &quot;0&quot;),
        new JProperty(&quot;totalTokens&quot;, responseBody?[&quot;usage&quot;]?[&quot;total_tokens&quot;]?.ToString() ?? &quot;0&quot;)
    ).ToString();
}" />"""
CONSUMED = """<set-variable name="consumed" value="@(context.Response.Body.As&lt;JObject&gt;(true).SelectToken(&quot;usage.total_tokens&quot;).ToObject&lt;int&gt;())" />"""


async def test_log_entry_built_from_the_response() -> None:
    services = FakeServices()
    context = await run(document("", outbound="<base />" + LOG), make_context(services))
    entry = orjson.loads(context.Variables["entry"])
    assert entry["model"] == "NA" and entry["promptTokens"] == "0" and entry["clientIp"] == "10.1.2.3"
    assert entry["operation"] == "ChatCompletions_Create" and len(entry["id"]) == 36
    assert orjson.loads(entry["request"])["messages"][0]["content"] == "hi"

    class WithUsage(FakeServices):
        async def forward(self, context: Context, timeout: float | None) -> None:
            await super().forward(context, timeout)
            context.Response.Body.replace(orjson.dumps({"id": "c-1", "model": "gpt-4o", "usage": {"prompt_tokens": 3, "total_tokens": 9}}))

    context = await run(document("", outbound="<base />" + LOG + CONSUMED), make_context(WithUsage()))
    entry = orjson.loads(context.Variables["entry"])
    assert (entry["id"], entry["model"], entry["promptTokens"], entry["totalTokens"]) == ("c-1", "gpt-4o", "3", "9")
    assert context.Variables["consumed"] == 9


WEIGHTED = """
<set-variable name="all-backends" value="@{
    JArray backends = new JArray();
    backends.Add(new JObject() { { &quot;id&quot;, &quot;primary&quot; }, { &quot;weight&quot;, 2 }, });
    backends.Add(new JObject() { { &quot;id&quot;, &quot;secondary&quot; }, { &quot;weight&quot;, 3 }, });
    return backends;
}" />
<set-variable name="selected-backend-id" value="@{
    var backends = (JArray)context.Variables[&quot;all-backends&quot;];
    var totalWeight = backends.Sum(e =&gt; (int)e[&quot;weight&quot;]);
    var randomNumber = new Random().Next(totalWeight);
    var weightSum = 0;
    foreach (var backend in backends)
    {
        weightSum += (int)backend[&quot;weight&quot;];
        if (randomNumber &lt; weightSum) { return backend[&quot;id&quot;].ToString(); }
    }
    return backends[0][&quot;id&quot;].ToString();
}" />
<set-backend-service backend-id="@((string)context.Variables[&quot;selected-backend-id&quot;])" />
<set-variable name="limit" value="@{
    var defaultLimit = 1000;
    if (context.Variables[&quot;remaining&quot;] is int remaining &amp;&amp; remaining &gt; 0) { defaultLimit += (int)(remaining * 0.1); }
    return defaultLimit;
}" />
"""


async def test_weighted_choice_and_pattern_matched_limit() -> None:
    picked = set()
    for _ in range(40):
        context = make_context(FakeServices())
        context.Variables.set("remaining", 2500)
        context = await run(document(WEIGHTED), context)
        picked.add(context.Variables["selected-backend-id"])
        assert context.backend_id == context.Variables["selected-backend-id"]
        assert context.Variables["limit"] == 1250
    assert picked == {"primary", "secondary"}


IDENTITY = """
<set-variable name="content-user" value="@{
    var t = context.Request.Headers.GetValueOrDefault(&quot;X-User-Token&quot;, &quot;&quot;);
    if (string.IsNullOrEmpty(t)) { return &quot;anonymous&quot;; }
    try {
        var parts = t.Split('.');
        if (parts.Length &lt; 2) { return &quot;anonymous&quot;; }
        var p = parts[1].Replace('-','+').Replace('_','/');
        var pad = p.Length % 4 == 0 ? &quot;&quot; : new string('=', 4 - p.Length % 4);
        var json = System.Text.Encoding.UTF8.GetString(System.Convert.FromBase64String(p + pad));
        var j = Newtonsoft.Json.Linq.JObject.Parse(json);
        return (string)(j[&quot;upn&quot;] ?? j[&quot;preferred_username&quot;] ?? j[&quot;oid&quot;]) ?? &quot;anonymous&quot;;
    } catch { return &quot;anonymous&quot;; }
}" />
<set-variable name="consent_valid" value="@{
    try {
        string returnedState = context.Variables.GetValueOrDefault&lt;string&gt;(&quot;state&quot;, &quot;&quot;);
        string consentedState = &quot;s-42&quot;;
        if (string.IsNullOrEmpty(consentedState) || returnedState.Length != consentedState.Length) { return false; }
        int result = 0;
        for (int i = 0; i &lt; returnedState.Length; i++) { result |= returnedState[i] ^ consentedState[i]; }
        return (result == 0);
    } catch (Exception ex) {
        return false;
    }
}" />
<set-variable name="verdict" value="@{
    try {
        var pv = JObject.Parse(&quot;{\\&quot;policyActions\\&quot;:[{\\&quot;action\\&quot;:\\&quot;restrictAccess\\&quot;}]}&quot;);
        var actions = pv.SelectTokens(&quot;$.policyActions[*].action&quot;).Select(t =&gt; t.ToString()).ToList();
        return actions.Any(a =&gt; a.Equals(&quot;Block&quot;, System.StringComparison.OrdinalIgnoreCase) || a.Equals(&quot;restrictaccess&quot;, System.StringComparison.OrdinalIgnoreCase)) ? &quot;BLOCKED&quot; : &quot;ALLOWED&quot;;
    } catch { return &quot;ALLOWED&quot;; }
}" />
<set-variable name="cache-key" value="@(&quot;obo-&quot; + context.Variables.GetValueOrDefault&lt;string&gt;(&quot;content-user&quot;, &quot;&quot;).GetHashCode().ToString())" />
"""


def unsigned_token(claims: dict[str, Any]) -> str:
    encode = lambda part: base64.urlsafe_b64encode(orjson.dumps(part)).decode().rstrip("=")  # noqa: E731
    return f"{encode({'alg': 'none'})}.{encode(claims)}.sig"


async def test_token_payload_decoding_constant_time_compare_and_verdict() -> None:
    context = make_context(FakeServices(), headers=[("X-User-Token", unsigned_token({"preferred_username": "ada@example.com", "oid": "1"}))])
    context.Variables.set("state", "s-42")
    context = await run(document(IDENTITY), context)
    assert context.Variables["content-user"] == "ada@example.com"
    assert context.Variables["consent_valid"] is True
    assert context.Variables["verdict"] == "BLOCKED"
    assert context.Variables["cache-key"].removeprefix("obo-").lstrip("-").isdigit()

    context = make_context(FakeServices(), headers=[("X-User-Token", "broken.%%%")])
    context.Variables.set("state", "s-43")
    context = await run(document(IDENTITY), context)
    assert (context.Variables["content-user"], context.Variables["consent_valid"]) == ("anonymous", False)


PRIORITY = """
<set-variable name="list-deployments" value="@{
    JArray deployments = new JArray();
    deployments.Add(new JObject() { { &quot;deployment-id&quot;, &quot;gpt-4o&quot; }, { &quot;tpm-limit&quot;, 10000 }, { &quot;low-priority-tpm-threshold&quot;, 3000 }, });
    deployments.Add(new JObject() { { &quot;deployment-id&quot;, &quot;other&quot; }, { &quot;tpm-limit&quot;, 20000 }, { &quot;low-priority-tpm-threshold&quot;, 3000 }, });
    return deployments;
}" />
<set-variable name="selected-deployment" value="@{
    JArray deployments = (JArray)context.Variables[&quot;list-deployments&quot;];
    for (int i = 0; i &lt; deployments.Count; i++)
    {
        JObject deployment = (JObject)deployments[i];
        if (deployment.Value&lt;string&gt;(&quot;deployment-id&quot;) == context.Request.MatchedParameters[&quot;deployment-id&quot;]) { return deployment; }
    }
    return null;
}" />
<set-variable name="consumed-tokens" value="@{
    JObject requestBody = context.Request.Body.As&lt;JObject&gt;(preserveContent: true);
    if (requestBody.ContainsKey(&quot;max_tokens&quot;)) { return requestBody.Value&lt;int&gt;(&quot;max_tokens&quot;); }
    else { return 16; }
}" />
<set-variable name="low-priority" value="@(bool.Parse(context.Request.Url.Query.GetValueOrDefault(&quot;is-batch&quot;, &quot;false&quot;)) || context.Request.Headers.GetValueOrDefault(&quot;x-priority&quot;, &quot;&quot;) == &quot;low&quot;)" />
<choose>
    <when condition="@(context.Variables[&quot;selected-deployment&quot;] == null)">
        <return-response><set-status code="404" reason="Deployment not found" /></return-response>
    </when>
</choose>
<set-header name="x-limits" exists-action="override">
    <value>@(((JObject)context.Variables["selected-deployment"]).Value&lt;int&gt;("tpm-limit").ToString() + "/" + ((int)context.Variables["consumed-tokens"]).ToString() + "/" + context.Variables["low-priority"].ToString())</value>
</set-header>
"""


async def test_deployment_table_lookup_and_priority() -> None:
    services = FakeServices()
    context = make_context(services, body={"max_tokens": 300, "messages": []}, headers=[("x-priority", "low")])
    await run(document(PRIORITY), context)
    assert dict(services.forwarded[0]["headers"])["x-limits"] == "10000/300/True"
    missing = await pipeline_of(document(PRIORITY)).execute(make_context(FakeServices(), deployment="unknown"))
    assert missing is not None and missing.status == 404


def test_today_dates_render_like_dotnet() -> None:
    from policies.expressions import compile_expression

    now = dt.datetime.now(dt.UTC)
    stamp = compile_expression('DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss")').evaluate(make_context())
    assert abs(dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.UTC) - now) < dt.timedelta(seconds=5)
