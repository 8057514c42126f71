// Gives an identity the "Cognitive Services OpenAI User" role on one Azure OpenAI resource, in that resource's
// own resource group (main.bicep deploys this module once per resource, scoped to its group), and reports the
// resource's endpoint for GATEWAY_BACKENDS.

@description('Name of the Azure OpenAI (Cognitive Services) account in this resource group.')
param accountName string

@description('Principal id of the identity that calls the resource.')
param principalId string

// Built-in role: Cognitive Services OpenAI User (inference, no management).
var openAiUserRole = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: accountName
}

resource openAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, openAiUserRole)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUserRole)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

output endpoint string = account.properties.endpoint
