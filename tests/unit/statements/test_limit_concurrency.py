"""`limit-concurrency`: at most max-count requests per key run its statements at once; others get 429."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from policies import context as ctx
from policies.document import Scope, load_document
from policies.errors import PolicyLoadError
from policies.statement import Loader
from policies.statements.limit_concurrency import IN_FLIGHT
from tests.policy_helpers import FakeServices, doc, make_context, pipeline_of


class HeldBackend(FakeServices):
    """Answers only when released, so requests stay in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def forward(self, context: ctx.Context, timeout: float | None) -> None:
        await self.release.wait()
        await super().forward(context, timeout)


LIMITED = doc(backend='<limit-concurrency key="@(context.Request.IpAddress)" max-count="2"><forward-request /></limit-concurrency>')


async def test_third_concurrent_request_is_refused_and_places_are_given_back() -> None:
    services = HeldBackend()
    pipeline = pipeline_of(LIMITED)
    held = [asyncio.ensure_future(pipeline.execute(make_context(services))) for _ in range(2)]
    await asyncio.sleep(0.01)
    refused_context = make_context(services)
    refused = await pipeline.execute(refused_context)
    assert refused is not None and refused.status == 429
    assert refused_context.LastError.Reason == "ConcurrencyLimitExceeded"
    assert "concurrent" in orjson.loads(refused.body)["error"]["message"]
    other_caller = asyncio.ensure_future(pipeline.execute(make_context(services, ip="10.9.9.9")))
    await asyncio.sleep(0.01)
    services.release.set()
    assert await asyncio.gather(*held, other_caller) == [None, None, None]
    assert len(IN_FLIGHT) == 0
    assert await pipeline.execute(make_context(services)) is None


async def test_place_is_given_back_when_the_body_fails() -> None:
    pipeline = pipeline_of(LIMITED)
    for _ in range(3):
        result = await pipeline.execute(make_context(FakeServices(["down"])))
        assert result is not None and result.status == 502
    assert len(IN_FLIGHT) == 0


@pytest.mark.parametrize(
    "element",
    [
        '<limit-concurrency key="k" max-count="0"><forward-request /></limit-concurrency>',
        '<limit-concurrency key="k" max-count="@(2)"><forward-request /></limit-concurrency>',
        '<limit-concurrency key="k" max-count="2" />',
    ],
)
def test_load_errors(element: str) -> None:
    with pytest.raises(PolicyLoadError):
        load_document(doc(backend=element), Scope("api", "openai"), Loader())
