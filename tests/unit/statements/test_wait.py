"""`wait`: its statements run at the same time; all or the first must finish before the pipeline goes on."""

from __future__ import annotations

import asyncio
import time

import pytest

from policies.context import Context
from policies.document import Scope, load_document
from policies.errors import PolicyLoadError
from policies.statement import Loader, Statement, register
from policies.xml import PolicyElement
from tests.policy_helpers import doc, run_document


@register
class Sleep(Statement):
    """A test-only statement: sleeps, then sets a variable (stands in for send-request)."""

    element = "test-sleep"

    def __init__(self, seconds: float, name: str) -> None:
        self.seconds, self.name = seconds, name

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> Sleep:
        return cls(float(element.attrib["seconds"]), element.attrib["name"])

    async def run(self, context: Context) -> None:
        await asyncio.sleep(self.seconds)
        context.Variables.set(self.name, time.monotonic())


def branch(seconds: float, name: str) -> str:
    return f'<choose><when condition="@(true)"><test-sleep seconds="{seconds}" name="{name}" /></when></choose>'


async def test_for_all_runs_children_concurrently_and_waits_for_every_one() -> None:
    started = time.monotonic()
    _, context, _ = await run_document(doc(inbound=f'<wait for="all">{branch(0.2, "a")}{branch(0.2, "b")}{branch(0.05, "c")}</wait>'))
    assert all(context.Variables.ContainsKey(name) for name in "abc")
    assert time.monotonic() - started < 0.35  # not 0.45: they ran at the same time


async def test_for_any_goes_on_after_the_first_and_cancels_the_rest() -> None:
    _, context, services = await run_document(doc(inbound=f'<wait for="any">{branch(0.01, "fast")}{branch(5, "slow")}</wait>'))
    assert context.Variables.ContainsKey("fast") and not context.Variables.ContainsKey("slow")
    assert len(services.forwarded) == 1


async def test_a_failing_child_fails_the_wait_into_on_error() -> None:
    failing = '<choose><when condition="@(context.Api.Id)"><test-sleep seconds="0" name="x" /></when></choose>'
    result, context, services = await run_document(doc(inbound=f"<wait>{failing}{branch(5, 'slow')}</wait>"))
    assert result is not None and result.status == 500 and services.forwarded == []
    assert context.LastError.Reason == "ExpressionValueEvaluationFailure"


@pytest.mark.parametrize(
    ("element", "message"),
    [
        ('<wait><set-variable name="x" value="1" /></wait>', "Unexpected element inside <wait>"),
        ("<wait />", "needs statements"),
        ('<wait for="some">' + branch(0, "a") + "</wait>", "use one of all, any"),
    ],
)
def test_load_errors(element: str, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message):
        load_document(doc(inbound=element), Scope("api", "openai"), Loader())
