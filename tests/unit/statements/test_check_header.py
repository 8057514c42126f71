"""`check-header`: a request header that must be present, and hold only listed values."""

from __future__ import annotations

import pytest

from tests.unit.statements.helpers import (
    body_message,
    context,
    load,
    load_error,
    refusal,
)

CHECK_HEADER = (
    '<check-header name="x-client" failed-check-httpcode="401" failed-check-error-message="Unknown client" ignore-case="{case}">'
    "<value>Portal</value><value>batch</value></check-header>"
)


@pytest.mark.parametrize(
    ("ignore_case", "sent"),
    [("true", ["portal"]), ("true", ["BATCH"]), ("false", ["Portal"]), ("false", ["batch", "Portal"])],
)
async def test_check_header_passes_when_every_value_is_listed(ignore_case: str, sent: list[str]) -> None:
    ctx = context([("X-Client", value) for value in sent])
    await load(CHECK_HEADER.format(case=ignore_case)).run(ctx)
    assert ctx.LastError is None


async def test_check_header_refuses_missing_header_with_configured_status_and_message() -> None:
    error = await refusal(load(CHECK_HEADER.format(case="true")), context([("x-other", "portal")]))
    assert (error.response.status, error.reason, error.source) == (401, "HeaderNotFound", "check-header")
    assert body_message(error) == "Unknown client"
    assert "x-client" in error.message


@pytest.mark.parametrize(
    ("ignore_case", "sent"),
    [("false", ["portal"]), ("true", ["stranger"]), ("true", ["portal", "stranger"])],
)
async def test_check_header_refuses_value_not_listed(ignore_case: str, sent: list[str]) -> None:
    error = await refusal(load(CHECK_HEADER.format(case=ignore_case)), context([("x-client", value) for value in sent]))
    assert (error.response.status, error.reason) == (401, "HeaderValueNotAllowed")
    assert "stranger" not in error.message  # the rejected value may be a secret


async def test_check_header_without_values_checks_presence_only() -> None:
    statement = load('<check-header name="x-team" failed-check-httpcode="403" failed-check-error-message="No team" ignore-case="false" />')
    await statement.run(context([("x-team", "anything")]))
    error = await refusal(statement, context())
    assert (error.response.status, body_message(error)) == (403, "No team")


@pytest.mark.parametrize(
    ("attributes", "problem"),
    [
        ('name="x" failed-check-httpcode="401" failed-check-error-message="m"', "'ignore-case' is required"),
        ('name="x" failed-check-httpcode="4011" failed-check-error-message="m" ignore-case="true"', "at most 599"),
        ('name="x" failed-check-httpcode="401" failed-check-error-message="m" ignore-case="maybe"', "true or false"),
    ],
)
def test_check_header_load_errors_name_element_and_line(attributes: str, problem: str) -> None:
    error = load_error(f"<check-header {attributes} />")
    assert (error.element, error.line) == ("check-header", 3)
    assert problem in str(error)
