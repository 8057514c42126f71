"""`set-variable`: a context variable later expressions read."""

from __future__ import annotations

from tests.policy_helpers import doc, run_document


async def test_set_variable_is_visible_to_later_expressions() -> None:
    _, context, services = await run_document(
        doc(
            inbound='<set-variable name="who" value="@(context.Subscription.Name + &quot;/&quot; + context.Product.Id)" />'
            '<set-header name="x-who" exists-action="override"><value>@((string)context.Variables["who"])</value></set-header>'
        )
    )
    assert context.Variables["who"] == "team-a/gold"
    assert ("x-who", "team-a/gold") in services.forwarded[0]["headers"]
