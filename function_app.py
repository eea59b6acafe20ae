"""The function app: composes one blueprint per concern, nothing else."""

import logging

import azure.functions as func

from functions.command_worker import bp as command_worker
from functions.health import bp as health
from functions.maintenance import bp as maintenance
from functions.polling import bp as polling
from functions.presence_api import bp as presence_api
from functions.subscriptions_api import bp as subscriptions_api

# The Azure SDKs log every request and response at INFO, the host's default
# level: that costs CPU on every storage call and buries the app's own lines.
logging.getLogger("azure").setLevel(logging.WARNING)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

for blueprint in (
    subscriptions_api,
    presence_api,
    command_worker,
    polling,
    maintenance,
    health,
):
    app.register_functions(blueprint)
