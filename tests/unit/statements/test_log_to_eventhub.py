"""`log-to-eventhub`: the message and partition key evaluated when it runs and handed to the event log (a fake),
without the request waiting; and what is refused at load."""

from __future__ import annotations

import pytest

from policies.errors import PolicyLoadError
from policies.statement import Loader
from tests.policy_helpers import doc, pipeline_of, run_document


async def test_message_and_partition_key_are_evaluated_and_logged_once_per_request() -> None:
    xml = doc(
        outbound='<base /><log-to-eventhub logger-id="usage" partition-key="@(context.Subscription.Id)">'
        '@(context.Subscription.Name + "/" + context.Response.StatusCode.ToString())</log-to-eventhub>'
    )
    result, _, services = await run_document(xml)
    assert result is None and len(services.forwarded) == 1
    assert services.event_log.messages == [("usage", "team-a/200", "sub-1", None)]


async def test_a_constant_partition_id_is_passed_and_a_null_message_logs_an_empty_line() -> None:
    _, _, services = await run_document(doc(inbound='<log-to-eventhub logger-id="audit" partition-id="3">@(null)</log-to-eventhub>'))
    assert services.event_log.messages == [("audit", "", None, "3")]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ('<log-to-eventhub logger-id="audit" partition-id="1" partition-key="k">m</log-to-eventhub>', "not both"),
        ('<log-to-eventhub logger-id="audit" partition-id="first">m</log-to-eventhub>', "not a partition index"),
        ('<log-to-eventhub logger-id="other">m</log-to-eventhub>', "Unknown logger-id 'other'"),
        ('<log-to-eventhub logger-id="audit"><message>m</message></log-to-eventhub>', "Unexpected element"),
        ("<log-to-eventhub>m</log-to-eventhub>", "'logger-id' is required"),
    ],
)
def test_load_errors(statement: str, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message):
        pipeline_of(doc(inbound=statement), Loader(logger_ids=frozenset({"audit"})))


def test_any_logger_id_loads_when_the_gateways_loggers_are_not_known() -> None:
    pipeline_of(doc(inbound='<log-to-eventhub logger-id="anything">m</log-to-eventhub>'), Loader())
