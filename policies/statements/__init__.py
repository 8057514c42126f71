"""One module per policy statement; importing this package registers every one of them."""

from policies.statements import (  # noqa: F401
    authentication_managed_identity,
    check_header,
    choose,
    cors,
    emit_token_metric,
    forward_request,
    headers,
    ip_filter,
    rate_limit,
    retry,
    return_response,
    semantic_cache,
    set_backend_service,
    set_variable,
    token_limit,
    validate_azure_ad_token,
    validate_jwt,
)
