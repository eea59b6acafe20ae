// The custom topic presence changes are published to. The app sends
// CloudEvents 1.0 (shared/adapters/eventgrid_publisher.py), so the topic must
// accept that schema; a topic created with the default Event Grid schema
// rejects them.

@description('Name of the Event Grid topic.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to the topic.')
param tags object = {}

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    // No access keys or SAS: publishers need an Entra token and the EventGrid
    // Data Sender role. The app therefore gets no EVENTGRID_TOPIC_KEY and
    // falls back to its managed identity.
    disableLocalAuth: true
    minimumTlsVersionAllowed: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

output name string = topic.name
output id string = topic.id
// https://<name>.<region>-1.eventgrid.azure.net/api/events
output endpoint string = topic.properties.endpoint
