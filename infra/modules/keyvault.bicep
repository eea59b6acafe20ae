// Key Vault for the Graph client secret. The function app reads it through a
// Key Vault reference in its app settings, so the secret never appears in the
// site configuration, in deployment outputs or in the deployment history.

@description('Key Vault name (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the vault.')
param tags object = {}

@description('Name of the secret holding the Graph client secret.')
param graphClientSecretName string

@description('Graph client secret. Empty: no secret is written (set it later, or use a certificate).')
@secure()
param graphClientSecret string = ''

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Access through Azure RBAC role assignments (roles.bicep), not vault
    // access policies, so all grants live in one place.
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // enablePurgeProtection is left unset (off): once on it can never be
    // turned off, and a torn-down environment's vault name would stay taken
    // for the retention period. Turn it on for production.
    publicNetworkAccess: 'Enabled'
  }
}

// Written only when a value was given, so that a later deployment without the
// parameter does not overwrite a secret an operator has set in the vault.
resource graphSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(graphClientSecret)) {
  parent: vault
  name: graphClientSecretName
  properties: {
    value: graphClientSecret
    contentType: 'Microsoft Graph client secret'
  }
}

output name string = vault.name
output id string = vault.id
output vaultUri string = vault.properties.vaultUri
