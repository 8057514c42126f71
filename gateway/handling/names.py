"""The names clients choose (deployments, response ids, model ids), bounded before routing, policies and metrics.

A name reaches counter keys, metric dimensions, table rows and the upstream URL, so it is checked first:

* **Deployment names** (`/openai/deployments/{deployment-id}/…` and the v1 body's `model`, which Azure OpenAI's v1
  API reads as a deployment name): 1 to 64 characters, ASCII letters, digits, `-`, `_` and `.`, starting with a
  letter or digit. Azure Resource Manager names in the Microsoft.CognitiveServices namespace follow
  `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$` with at most 64 characters; deployments accept the same characters (model names
  such as `gpt-4.1` are common deployment names). The leading letter or digit rules out the dot segments `.` and
  `..`, plain or `%2E`-encoded (the host decodes the path before routing).
* **Response ids** (`/openai/v1/responses/{response-id}`): 1 to 128 letters, digits, `-` and `_` (`resp_…`).
* **Model ids** (`/openai/v1/models/{model-id}`): 1 to 128 characters, letters, digits, `-`, `_`, `.`, `:` and
  `@`, starting with a letter or digit (base and fine-tuned model ids).

Out-of-rule path ids match no route (404 "Resource not found", what Azure OpenAI answers for a path it cannot
route); an out-of-rule body `model` is a 400. Checked names contain nothing a URL parser could normalise, so the
upstream path built from them (`operations.RouteMatch.path`) is the path the backend sees.
"""

from __future__ import annotations

import re

from gateway.errors import BadRequest

DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")

#: Path parameter -> the rule its value must match in full.
PATH_RULES: dict[str, re.Pattern[str]] = {"deployment-id": DEPLOYMENT_NAME, "response-id": RESPONSE_ID, "model-id": MODEL_ID}


def valid_path_id(parameter: str, value: str) -> bool:
    """Whether `value` may stand for the path parameter `parameter` (a parameter without a rule never may)."""
    rule = PATH_RULES.get(parameter)
    return rule is not None and rule.fullmatch(value) is not None


def body_model(value: object) -> str:
    """The v1 body's `model`, a deployment name; a 400 in the OpenAI error shape when it is missing or out of rule."""
    if not isinstance(value, str) or not value:
        raise BadRequest("Missing required parameter: 'model'.")
    if DEPLOYMENT_NAME.fullmatch(value) is None:
        raise BadRequest(
            "Invalid value for 'model': use a deployment name of 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit."
        )
    return value
