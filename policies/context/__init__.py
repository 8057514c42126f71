"""The `context` object that policy expressions read and statements change, shaped like APIM's.

Members visible to expressions are the PascalCase attributes and methods declared here with type hints
(`context.Request.Headers.GetValueOrDefault(...)`); the expression compiler checks every member chain
against these declarations at load time, so an unsupported member is a load error, never a runtime surprise.
snake_case members are the gateway's own API for statements and are invisible to expressions. A `TryX`
method returning `tuple[bool, T]` is C#'s `TryX(…, out T value)`; `_enumerate()` is what `foreach` walks.
"""

from __future__ import annotations

import datetime as _dt
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from policies.context._messages import Body as Body
from policies.context._messages import Headers as Headers
from policies.context._messages import JToken as JToken
from policies.context._messages import KeyValuePair as KeyValuePair
from policies.context._messages import QueryParameters as QueryParameters
from policies.context._messages import ReadOnlyMap as ReadOnlyMap
from policies.context._messages import Request as Request
from policies.context._messages import Response as Response
from policies.context._messages import Url as Url

if TYPE_CHECKING:
    from policies.services import Services
    from policies.usage import Usage, UsageListener


class Subscription:
    Id: str
    Name: str
    #: The key this request presented (the gateway stores only hashes, so Primary/SecondaryKey do not exist).
    Key: str
    CreatedDate: str

    def __init__(self, id: str, name: str, key: str, created: str) -> None:  # noqa: A002
        self.Id, self.Name, self.Key, self.CreatedDate = id, name, key, created


class Named:
    """`context.Product`: an id and a display name."""

    Id: str
    Name: str

    def __init__(self, id: str, name: str) -> None:  # noqa: A002
        self.Id, self.Name = id, name


class Api(Named):
    """`context.Api`. `ServiceUrl` is the API's backend URL, null when the gateway did not give one."""

    Path: str
    Revision: str
    Version: str
    IsCurrentRevision: bool
    ServiceUrl: Url | None

    def __init__(  # noqa: PLR0913 - APIM's members
        self,
        id: str,
        name: str,
        path: str = "openai",
        revision: str = "1",
        version: str = "",
        service_url: Url | None = None,  # noqa: A002
    ) -> None:
        super().__init__(id, name)
        self.Path, self.Revision, self.Version, self.ServiceUrl = path, revision, version, service_url
        self.IsCurrentRevision = True


@functools.lru_cache(maxsize=64)
def _default_api(id: str, name: str) -> Api:  # noqa: A002
    """The Api for a plain Named, shared between requests (nothing changes it), so no request builds one."""
    return Api(id, name)


class Group:
    """One of `context.User.Groups`."""

    Id: str
    Name: str

    def __init__(self, id: str, name: str = "") -> None:  # noqa: A002
        self.Id, self.Name = id, name or id


class User:
    """`context.User`: the owner of the calling subscription (null when the subscription has none)."""

    Id: str
    Email: str
    FirstName: str
    LastName: str
    Note: str
    RegistrationDate: _dt.datetime | None
    Groups: list[Group]

    def __init__(  # noqa: PLR0913 - APIM's members
        self, id: str, email: str = "", first_name: str = "", last_name: str = "", note: str = "",  # noqa: A002
        registration_date: _dt.datetime | None = None, groups: Iterable[Group] = (),
    ) -> None:  # fmt: skip
        self.Id, self.Email, self.FirstName, self.LastName, self.Note = id, email, first_name, last_name, note
        self.RegistrationDate, self.Groups = registration_date, list(groups)


class Operation:
    Id: str
    Name: str
    Method: str
    UrlTemplate: str

    def __init__(self, id: str, method: str, url_template: str) -> None:  # noqa: A002
        self.Id, self.Name, self.Method, self.UrlTemplate = id, id, method, url_template


class GatewayInfo:
    Id: str
    IsManaged: bool

    def __init__(self, id: str) -> None:  # noqa: A002
        self.Id, self.IsManaged = id, False


class Deployment:
    Region: str
    ServiceName: str
    Gateway: GatewayInfo

    def __init__(self, region: str, service_name: str, gateway_id: str) -> None:
        self.Region, self.ServiceName, self.Gateway = region, service_name, GatewayInfo(gateway_id)


class LastError:
    Source: str
    Reason: str
    Message: str
    Scope: str
    Section: str
    Path: str
    PolicyId: str

    def __init__(self, source: str, reason: str, message: str, section: str, scope: str = "", policy_id: str = "") -> None:
        self.Source, self.Reason, self.Message = source, reason, message
        self.Scope, self.Section, self.Path, self.PolicyId = scope, section, "", policy_id


class Variables:
    """`context.Variables`: values set by `set-variable` and by statements' `*-variable-name` attributes."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def __getitem__(self, name: str) -> JToken:
        return self._values[name]

    def ContainsKey(self, name: str) -> bool:
        return name in self._values

    def GetValueOrDefault(self, name: str, default: JToken = None, *, T: str = "object") -> JToken:  # noqa: N803
        """The value, or `default`. With `<T>` the expression compiler converts the result to T, as APIM does
        (`GetValueOrDefault<int>` on "7" gives 7; a missing value without default gives T's default)."""
        return self._values.get(name, default)

    def TryGetValue(self, name: str) -> tuple[bool, Any]:
        return name in self._values, self._values.get(name)

    @property
    def Count(self) -> int:
        return len(self._values)

    def _enumerate(self) -> list[KeyValuePair]:
        return [KeyValuePair(name, value) for name, value in self._values.items()]

    def set(self, name: str, value: Any) -> None:
        self._values[name] = value

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def items(self) -> list[tuple[str, Any]]:
        return list(self._values.items())


# Context's members carry APIM's names, which are also their classes' names: aliases keep annotations clear.
_Request = Request
_Response = Response
_Subscription = Subscription
_Api = Api
_Operation = Operation
_User = User
_Deployment = Deployment
_Variables = Variables
_LastError = LastError


class Context:
    """One request's policy context. The gateway builds it; statements read and change it."""

    Request: _Request
    Response: _Response | None
    Subscription: _Subscription | None
    Product: Named | None
    Api: _Api
    Operation: _Operation
    User: _User | None
    Deployment: _Deployment
    Variables: _Variables
    LastError: _LastError | None

    def __init__(
        self,
        request: _Request,
        api: Named,
        operation: _Operation,
        deployment: _Deployment,
        request_id: str | None = None,
        subscription: _Subscription | None = None,
        product: Named | None = None,
        user: _User | None = None,
        services: Services | None = None,
    ) -> None:
        """`api` may be a plain Named (an Api with the default path and revision, and no service URL); without a
        `request_id`, a GUID is made when one is first asked for (most requests never need it)."""
        self.Request, self.Operation, self.Deployment = request, operation, deployment
        self.Api = api if isinstance(api, Api) else _default_api(api.Id, api.Name)
        self.Subscription, self.Product, self.User = subscription, product, user
        self.Response = None
        self.Variables = Variables()
        self.LastError = None
        self._request_id = request_id
        self.started = time.monotonic()
        self.services: Services = services  # type: ignore[assignment]
        #: Work statements defer until the backend has answered (e.g. a conditional rate-limit count).
        self.after_backend: list[Callable[[], Awaitable[None]]] = []
        #: Statements that account for tokens; each is called once with the request's usage.
        self.usage_listeners: list[UsageListener] = []
        #: Called once with the complete answer (JSON bytes; a stream assembled into its non-streaming form) when
        #: the backend's answer reached the client in full; not for refusals, errors or aborted streams.
        self.body_listeners: list[Callable[[int, bytes], Awaitable[None]]] = []
        #: Set by a semantic-cache hit: what the cached answer had used, reported as tokens saved.
        self.cache_hit_usage: Usage | None = None
        #: Left by a semantic-cache lookup that missed: what the store statement needs to store the answer.
        self.cache_ticket: object = None
        #: Headers statements add to whatever response the client finally gets (e.g. remaining-calls).
        self.response_headers: list[tuple[str, str]] = []
        #: The id of the backend that answered (set when the request is forwarded), for metrics.
        self.backend_used: str = ""
        #: The backend chosen by `set-backend-service backend-id=…` (a backend or pool id) or `base-url=…`.
        self.backend_id: str | None = None
        self.base_url: str | None = None

    @property
    def RequestId(self) -> str:
        if self._request_id is None:
            self._request_id = str(uuid.uuid4())
        return self._request_id

    @property
    def Timestamp(self) -> _dt.datetime:
        return _dt.datetime.now(_dt.UTC)

    @property
    def Elapsed(self) -> _dt.timedelta:
        """Time since the request arrived (a TimeSpan)."""
        return _dt.timedelta(seconds=time.monotonic() - self.started)
