// Teams presence service: everything one environment needs, in one resource
// group. Each concern is a module under ./modules; this file only names the
// resources and wires outputs to inputs.
//
//   infra/deploy.sh   (runs az deployment group create with this file, then
//                      deploys the code)
//
// deploy.sh passes the Graph client secret in a temporary parameters file,
// never on the command line, where it would show in the process list and
// the shell's history.

targetScope = 'resourceGroup'

@description('Azure region for all resources; must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Short environment name (dev, test, prod...). Part of the seed of every resource name.')
@minLength(1)
@maxLength(16)
param environmentName string

@description('Application (client) id of the multi-tenant Entra app registration with Presence.Read.All.')
param graphClientId string

@description('Client secret of that app registration, stored in Key Vault. Leave empty to set it in the vault later.')
@secure()
param graphClientSecret string = ''

@description('Upper bound on Flex Consumption instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Microsoft Graph base URL (change only for a national cloud).')
param graphBaseUrl string = 'https://graph.microsoft.com/v1.0'

@description('Entra ID authority host (change only for a national cloud).')
param graphAuthorityHost string = 'https://login.microsoftonline.com'

// Same resource group and environment name give the same names, so a
// redeployment updates in place; another group or environment gets its own.
var resourceToken = toLower(uniqueString(resourceGroup().id, environmentName))
var tags = {
  environment: environmentName
  service: 'teams-presence'
}
var deploymentContainerName = 'app-package'
var graphClientSecretName = 'graph-client-secret'

module identity './modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: 'id-presence-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring './modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: 'log-presence-${resourceToken}'
    applicationInsightsName: 'appi-presence-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage './modules/storage.bicep' = {
  name: 'storage'
  params: {
    // 'st' + 13 characters: within the 24-character limit, letters and digits.
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module eventGrid './modules/eventgrid.bicep' = {
  name: 'eventgrid'
  params: {
    name: 'evgt-presence-${resourceToken}'
    location: location
    tags: tags
  }
}

module keyVault './modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    // 'kv-' + 13 characters: within the 24-character limit.
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    graphClientSecretName: graphClientSecretName
    graphClientSecret: graphClientSecret
  }
}

module roles './modules/roles.bicep' = {
  name: 'roles'
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    eventGridTopicName: eventGrid.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

module functionApp './modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    planName: 'plan-presence-${resourceToken}'
    name: 'func-presence-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    eventGridTopicEndpoint: eventGrid.outputs.endpoint
    keyVaultName: keyVault.outputs.name
    graphClientSecretName: graphClientSecretName
    graphClientId: graphClientId
    graphBaseUrl: graphBaseUrl
    graphAuthorityHost: graphAuthorityHost
    maximumInstanceCount: maximumInstanceCount
  }
  // Nothing in the app's parameters refers to the role assignments, so the
  // order is stated: the host must not start, and Key Vault references must
  // not be resolved, before the identity may use storage and the vault.
  dependsOn: [
    roles
  ]
}

// Names and endpoints only: nothing secret is output.
output functionAppName string = functionApp.outputs.name
output functionAppHostName string = functionApp.outputs.defaultHostName
output eventGridTopicEndpoint string = eventGrid.outputs.endpoint
output storageAccountName string = storage.outputs.name
output keyVaultName string = keyVault.outputs.name
