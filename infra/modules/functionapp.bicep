// The Flex Consumption (FC1) plan and the Linux Python function app on it,
// with every app setting the code reads in production (shared/settings.py).

@description('Name of the Flex Consumption plan.')
param planName string

@description('Name of the function app (globally unique: <name>.azurewebsites.net).')
param name string

@description('Azure region.')
param location string

@description('Tags applied to the plan and the app.')
param tags object = {}

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity.')
param identityClientId string

@description('Storage account for the host, the deployment package and the app data.')
param storageAccountName string

@description('Blob container URL holding the deployment package.')
param deploymentContainerUrl string

@description('Application Insights connection string.')
param applicationInsightsConnectionString string

@description('Event Grid topic endpoint (https://.../api/events).')
param eventGridTopicEndpoint string

@description('Key Vault holding the Graph client secret.')
param keyVaultName string

@description('Name of the Graph client secret in that vault.')
param graphClientSecretName string

@description('Application (client) id of the multi-tenant Entra app that reads presence.')
param graphClientId string

@description('Microsoft Graph base URL.')
param graphBaseUrl string = 'https://graph.microsoft.com/v1.0'

@description('Entra ID authority host.')
param graphAuthorityHost string = 'https://login.microsoftonline.com'

@description('Upper bound on instances the plan scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory per instance, in MB.')
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

// Service URIs built without a trailing slash. The app's own clients need the
// queue and table URIs (shared/settings.py reads exactly these two names); the
// host needs blob and queue. All three go to the host too, so host and app
// agree on one account.
var storageSuffix = environment().suffixes.storage
var blobServiceUri = 'https://${storageAccountName}.blob.${storageSuffix}'
var queueServiceUri = 'https://${storageAccountName}.queue.${storageSuffix}'
var tableServiceUri = 'https://${storageAccountName}.table.${storageSuffix}'

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    // Linux.
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references would otherwise be resolved with a system-assigned
    // identity, which this app does not have.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      // Flex Consumption takes the language and version from here; the
      // FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION app settings
      // of the other plans are not used (and are rejected) on it.
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }

  resource appSettings 'config' = {
    name: 'appsettings'
    properties: {
      // Host and app storage, identity-based: no connection string, no key.
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identityClientId
      AzureWebJobsStorage__blobServiceUri: blobServiceUri
      AzureWebJobsStorage__queueServiceUri: queueServiceUri
      AzureWebJobsStorage__tableServiceUri: tableServiceUri
      // DefaultAzureCredential picks the user-assigned identity from this.
      // The Event Grid publisher constructs it without a client id, and with
      // only a user-assigned identity on the app it would find none otherwise.
      AZURE_CLIENT_ID: identityClientId
      APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
      // Telemetry is sent with an Entra token of this identity (local auth is
      // off on the component).
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
      // No EVENTGRID_TOPIC_KEY: its absence makes the app use its identity.
      EVENTGRID_TOPIC_ENDPOINT: eventGridTopicEndpoint
      GRAPH_CLIENT_ID: graphClientId
      // Resolved by the platform with keyVaultReferenceIdentity. Until the
      // secret exists in the vault the reference does not resolve and the app
      // sees the literal reference text, so Graph token requests fail (see
      // docs/deployment.md).
      GRAPH_CLIENT_SECRET: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${graphClientSecretName})'
      GRAPH_BASE_URL: graphBaseUrl
      GRAPH_AUTHORITY_HOST: graphAuthorityHost
      // Six-field NCRONTAB (seconds first), read by the timer triggers as
      // %POLL_SCHEDULE% and %OUTBOX_SWEEP_SCHEDULE%.
      POLL_SCHEDULE: '*/30 * * * * *'
      OUTBOX_SWEEP_SCHEDULE: '15 * * * * *'
      // How long an Idempotency-Key is remembered; older records are purged
      // daily.
      IDEMPOTENCY_RETENTION_HOURS: '24'
    }
  }
}

output name string = app.name
output id string = app.id
output defaultHostName string = app.properties.defaultHostName
