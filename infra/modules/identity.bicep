// The one identity the function app runs as. User-assigned rather than
// system-assigned so that its principal exists before the app does: every role
// assignment (storage, Event Grid, Key Vault) is created before the first host
// start, and the host never boots against storage it cannot yet read. It also
// survives the app being deleted and recreated.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
