// The gateway as a Flex Consumption Function App (Python 3.11) with its storage account, Application Insights,
// and a user-assigned managed identity that has "Cognitive Services OpenAI User" on the given Azure OpenAI
// resources. App settings are written by modules/app-settings.bicep, which also lists every optional setting.
//
//   az deployment group create -g <resource group> -f infra/main.bicep -p infra/main.parameters.json \
//     -p keyPepper="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')" adminKey=<16+ characters>
//   func azure functionapp publish <appName> --python
//
// `bicep` / `az bicep build` compile it; the repository's tests check it against the settings the code reads.

targetScope = 'resourceGroup'

@description('Function App name (also the prefix of the other resources\' names).')
@minLength(3)
@maxLength(40)
param appName string

@description('Region of every resource; must offer Flex Consumption (`az functionapp list-flexconsumption-locations`).')
param location string = resourceGroup().location

@description('Azure OpenAI resources the gateway calls with its managed identity: [{"name": "...", "resourceGroup": "... (default: this one)", "deployments": ["gpt-4o", ...] (default ["*"]), "endpoint": "https://... (default: the resource\'s)"}].')
param openAiAccounts array = []

@description('GATEWAY_BACKENDS as JSON, used verbatim instead of the one built from openAiAccounts (pools, circuit breakers, API keys).')
param backendsJson string = ''

@secure()
@minLength(16)
@description('GATEWAY_KEY_PEPPER: the secret subscription keys are hashed with. Changing it invalidates every key.')
param keyPepper string

@secure()
@description('GATEWAY_ADMIN_KEY for /ops/backends and /ops/dashboard (16+ characters); empty hides them.')
param adminKey string = ''

@description('GATEWAY_PUBLIC_URL, e.g. https://ai.contoso.com behind Front Door; empty: the Function App\'s own host.')
param publicUrl string = ''

@description('GATEWAY_PRODUCTS: product name -> API ids, e.g. {"gold": ["openai", "openai-v1"]}.')
param products object = {}

@description('GATEWAY_TABLE_PREFIX: prefix of the gateway\'s tables (letters and digits).')
param tablePrefix string = 'gateway'

@description('GATEWAY_POLICY_QUEUE: the queue policy updates arrive on.')
param policyQueue string = 'policy-updates'

@description('More app settings, e.g. optional ones listed in modules/app-settings.bicep or a backend\'s api_key_setting.')
param extraAppSettings object = {}

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

// Sized from bench/tokens.py (token limit + token metric on; see README "Performance"): a buffered request costs
// the gateway ~0.5 ms of CPU, a streamed token ~0.1 ms, and an open 2,000-token stream ~2.2 MiB of memory.
// One worker process runs one event loop, so one core is what an instance uses: 2048 MB instances have one
// (512 MB ones a quarter, 4096 MB ones two that a single process cannot fill). Streams bind first: at ~70
// tokens/s each, 100 open streams are ~0.7 of that core, and ~220 MiB next to ~150 MiB for the host, worker and
// gateway and the semantic cache's 128 MiB cap. Buffered requests spend seconds waiting on the model for
// 0.5 ms of CPU, so 100 of them in flight cost little. The Functions host's own proxying of each chunk is not in
// these numbers: if instances run hot under load, lower the concurrency (the platform then adds instances).
@allowed([512, 2048, 4096])
@description('Instance memory (MB): 2048 gives the single worker process its one core (see the sizing note above).')
param instanceMemoryMB int = 2048

// Without it Flex Consumption gives Python apps 1 request per instance: every open stream would hold an instance.
@minValue(1)
@maxValue(1000)
@description('HTTP requests (open streams included) one instance serves at once before the platform adds another.')
param httpPerInstanceConcurrency int = 100

var token = toLower(uniqueString(resourceGroup().id, appName))
var storageName = take('st${replace(toLower(appName), '-', '')}${token}', 24)
var packageContainer = 'app-package'
// Built-in role: Storage Blob Data Owner, for the deployment package container (Flex Consumption reads the
// package with the app's identity).
var blobOwnerRole = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${appName}'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    supportsHttpsTrafficOnly: true
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource package 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: packageContainer
}

// Policy documents dropped here are applied by the blob trigger (after an Event Grid subscription is added).
resource policies 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: 'policies'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource updates 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queues
  name: policyQueue
}

resource packageReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, blobOwnerRole)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobOwnerRole)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${appName}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${appName}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${appName}'
  location: location
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${packageContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
  dependsOn: [
    package
    packageReader
  ]
}

module openAiUsers 'modules/openai-user.bicep' = [for account in openAiAccounts: {
  name: 'openai-user-${account.name}'
  scope: resourceGroup(account.?resourceGroup ?? resourceGroup().name)
  params: {
    accountName: account.name
    principalId: identity.properties.principalId
  }
}]

module settings 'modules/app-settings.bicep' = {
  name: 'app-settings'
  params: {
    appName: app.name
    storageName: storage.name
    insightsConnection: insights.properties.ConnectionString
    identityClientId: identity.properties.clientId
    openAiAccounts: openAiAccounts
    endpoints: [for (account, i) in openAiAccounts: account.?endpoint ?? openAiUsers[i].outputs.endpoint]
    backendsJson: backendsJson
    keyPepper: keyPepper
    adminKey: adminKey
    publicUrl: publicUrl
    products: products
    tablePrefix: tablePrefix
    policyQueue: policyQueue
    extraAppSettings: extraAppSettings
  }
  dependsOn: [
    updates
  ]
}

output functionAppName string = app.name
output gatewayUrl string = 'https://${app.properties.defaultHostName}'
output identityClientId string = identity.properties.clientId
