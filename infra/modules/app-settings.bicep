// The gateway's app settings. A module of its own so that GATEWAY_BACKENDS can be built in a loop from values
// that only exist once main.bicep's resources do (the identity's client id, the resources' endpoints): here
// they are parameters, known when the module starts.
//
// Settings the code reads and this file does not set (tests/unit/test_infra.py checks this list, and the names set
// below, against every setting read in gateway/, policies/ and function_app.py). Add optional ones through
// main.bicep's `extraAppSettings`.
//
// optional: GATEWAY_STORAGE_CONNECTION — tables elsewhere than AzureWebJobsStorage
// optional: AZURE_OPENAI_ENDPOINT — one backend for every deployment, instead of GATEWAY_BACKENDS
// optional: AZURE_OPENAI_API_KEY — its key (managed identity when absent)
// optional: AZURE_OPENAI_CLIENT_ID — the user-assigned identity for it
// optional: AZURE_OPENAI_EMBEDDINGS_DEPLOYMENT — its embeddings deployment, for the semantic cache
// optional: GATEWAY_SUBSCRIPTION_CACHE_SECONDS — how long a checked key is trusted (default 5)
// optional: GATEWAY_SUBSCRIPTION_STALE_SECONDS — during a storage outage, how long a verified key keeps working (default 300)
// optional: GATEWAY_SSE_KEEPALIVE_SECONDS — silence before a keep-alive comment on a stream (default 15)
// optional: GATEWAY_UPSTREAM_CONNECT_TIMEOUT — seconds (default 10)
// optional: GATEWAY_UPSTREAM_READ_TIMEOUT — seconds (default 220: under the platform's 230 s limit on a response)
// optional: GATEWAY_ID — gateway id for policies (default: the instance id)
// optional: GATEWAY_POLICY_POLL_SECONDS — how often instances check the policy version (default 5)
// optional: GATEWAY_NAMED_VALUES — APIM named values as JSON
// optional: GATEWAY_OPENID_KEYS — JWKS for validate-jwt without network access, as JSON
// optional: GATEWAY_DEPLOYMENT_MODELS — deployment -> model, for the tokenizer, as JSON
// optional: GATEWAY_DEFAULT_ENCODING — o200k_base (default) or cl100k_base
// optional: GATEWAY_DEFAULT_COMPLETION_RESERVATION — tokens a token limit reserves without max_tokens (default 1024)
// optional: GATEWAY_LEASE_FRACTION — share of a token limit an instance leases at a time (default 0.05)
// optional: GATEWAY_LEASE_SECONDS — lifetime of a token-limit lease without renewal: what a vanished instance strands (default 30)
// optional: GATEWAY_LIMITS_ON_STORAGE_OUTAGE — local (default: count per instance) or refuse (503) while storage is down
// optional: GATEWAY_METRICS_FLUSH_SECONDS — how often token metrics are written: what a hard kill loses (default 5)
// optional: GATEWAY_SHUTDOWN_DRAIN_SECONDS — how long a graceful stop waits for open streams (default 230)
// optional: GATEWAY_TOKEN_RATE_WINDOW_SECONDS — window of tokens-per-minute limits (default 60; tests only)
// optional: GATEWAY_HEALTH_SYNC_SECONDS — how often instances share backend health (default 2)
// optional: GATEWAY_PREDICTIVE_ROUTING — true to route away before a backend throttles
// optional: GATEWAY_PREDICTIVE_MIN_TOKENS — its token headroom (default 1000)
// optional: GATEWAY_PREDICTIVE_MIN_REQUESTS — its request headroom (default 1)
// optional: GATEWAY_ALLOWED_URLS — hosts and URL prefixes base-url and send-request may reach besides the backends
// optional: GATEWAY_LOGGERS — log-to-eventhub loggers as JSON (Event Hubs, Storage queue or blob)
// optional: GATEWAY_SEMANTIC_CACHE_CONNECTION — storage for semantic cache entries (default: the tables')
// optional: GATEWAY_SEMANTIC_CACHE_SCOPE — who shares cache entries: subscription (default) or product
// optional: GATEWAY_SEMANTIC_CACHE_STALENESS_SECONDS — semantic cache sync bound
// optional: GATEWAY_SEMANTIC_CACHE_TIMEOUT_SECONDS — semantic cache lookup time budget
// optional: GATEWAY_SEMANTIC_CACHE_CLEANUP_SECONDS — how often expired cache entries are removed
// optional: GATEWAY_SEMANTIC_CACHE_MAX_MIB — memory all semantic cache partitions of an instance may hold (default 128)
// optional: GATEWAY_LOCAL_QUEUE_WORKER — the local host's queue poller (under Functions the queue trigger applies updates)
// optional: GATEWAY_POLICY_QUEUE_RETRY_SECONDS — local host only: pause before a failed policy update is retried (default 30, host.json's visibilityTimeout)
// optional: GATEWAY_CLIENT_HEADER_TIMEOUT_SECONDS — local host only: time for a request's headers (default 10)
// optional: GATEWAY_CLIENT_BODY_TIMEOUT_SECONDS — local host only: time for a request's body after its headers (default 120)
// optional: GATEWAY_CLIENT_IDLE_TIMEOUT_SECONDS — local host only: keep-alive silence between requests, whole seconds (default 5)
// optional: GATEWAY_LOG_LEVEL — log level of the local host (`python -m gateway serve`); host.json decides under Functions
// optional: TIKTOKEN_CACHE_DIR — where tokenizer files are unpacked (default: the temp directory)
// optional: OPENBLAS_NUM_THREADS — numpy's BLAS threads for the semantic cache index (default 1, set by function_app.py)
// platform: WEBSITE_INSTANCE_ID — set by App Service; the default GATEWAY_ID
// platform: REGION_NAME — set by App Service; context.Deployment.Region in policies
// platform: FUNCTIONS_WORKER_RUNTIME — set by the Functions host; makes GATEWAY_TRUSTED_PROXY_HOPS default to 1
// optional: GATEWAY_TRUST_FORWARDED_FOR — the former setting: true reads as GATEWAY_TRUSTED_PROXY_HOPS=1 when that is unset
// local: SIMULATOR_API_KEY — the simulated backend's key, local runs only
// local: GATEWAY_TRY_KEY — the subscription key `python -m gateway try` sends
// local: GATEWAY_LOCAL_DIR — where `python -m gateway run` keeps local state (default .local/; tests move it)
// host: PYTHON_ENABLE_INIT_INDEXING — read by the Functions Python worker (the HTTP streaming extension needs it)
// dynamic: the setting a backend's `api_key_setting` names in GATEWAY_BACKENDS (pass it in extraAppSettings,
//          ideally as a Key Vault reference: @Microsoft.KeyVault(SecretUri=...))

param appName string
param storageName string
param insightsConnection string
param identityClientId string
param openAiAccounts array
@description('The endpoint of each of openAiAccounts, in the same order.')
param endpoints array
param backendsJson string
@secure()
param keyPepper string
@secure()
param adminKey string
param publicUrl string
param products object
param tablePrefix string
param policyQueue string
param extraAppSettings object

resource app 'Microsoft.Web/sites@2024-04-01' existing = {
  name: appName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageName
}

var generatedBackends = [for (account, i) in openAiAccounts: {
  id: account.name
  url: endpoints[i]
  deployments: account.?deployments ?? ['*']
  managed_identity: {
    client_id: identityClientId
  }
}]

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: app
  name: 'appsettings'
  // app settings: begin
  properties: union({
    AzureWebJobsStorage: 'DefaultEndpointsProtocol=https;AccountName=${storage.name};AccountKey=${storage.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}'
    APPLICATIONINSIGHTS_CONNECTION_STRING: insightsConnection
    PYTHON_ENABLE_INIT_INDEXING: '1'
    GATEWAY_KEY_PEPPER: keyPepper
    GATEWAY_TABLE_PREFIX: tablePrefix
    GATEWAY_POLICY_QUEUE: policyQueue
    GATEWAY_BACKENDS: empty(backendsJson) ? string(generatedBackends) : backendsJson
    // The Functions host sets X-Forwarded-For to the peer it saw (one trusted hop); say so explicitly (Flex
    // Consumption has no FUNCTIONS_WORKER_RUNTIME setting). Add one per proxy of yours in front (Front Door, ...).
    GATEWAY_TRUSTED_PROXY_HOPS: '1'
  }, empty(adminKey) ? {} : {
    GATEWAY_ADMIN_KEY: adminKey
  }, empty(publicUrl) ? {} : {
    GATEWAY_PUBLIC_URL: publicUrl
  }, empty(products) ? {} : {
    GATEWAY_PRODUCTS: string(products)
  }, extraAppSettings)
  // app settings: end
}
