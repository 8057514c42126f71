"""The context's classes under the names APIM gives them, so casts such as `(IResponse)context.Variables["r"]`
and declarations such as `IRequest request = context.Request;` compile."""

from __future__ import annotations

from policies import context
from policies.expressions._types import GENERIC_TYPES, class_type, register_class

for _cls, _name in (
    (context.Context, "IContext"), (context.Request, "IRequest"), (context.Response, "IResponse"), (context.Url, "IUrl"),
    (context.Body, "IMessageBody"), (context.Headers, "IHeaders"), (context.QueryParameters, "IQueryParameters"),
    (context.ReadOnlyMap, "IReadOnlyDictionary"), (context.Subscription, "ISubscription"), (context.Named, "IProduct"),
    (context.Api, "IApi"), (context.User, "IUser"), (context.Group, "IGroup"), (context.Operation, "IOperation"),
    (context.Deployment, "IDeployment"), (context.GatewayInfo, "IGateway"), (context.LastError, "ILastError"),
    (context.Variables, "IVariables"), (context.KeyValuePair, "KeyValuePair"),
):  # fmt: skip
    register_class(_cls, _name)
GENERIC_TYPES["KeyValuePair"] = lambda arguments: class_type(context.KeyValuePair)
