"""The local stack's API server: `chalice local`, answering a route the API does not have the
way the stack's gateway responses do on AWS (deploy/stack.py): a v3 404 `unknown_route`.

chalice local imitates API Gateway there with a 403 whose message repeats the caller's
Authorization header, which an error body must never do; every route the app has is served by
chalice's own local gateway, unchanged.
"""
from __future__ import annotations

import logging
import os
import sys
import uuid

import orjson
from chalice.cli.factory import CLIFactory
from chalice.deploy.validate import validate_routes
from chalice.local import ChaliceRequestHandler, ForbiddenError, LocalDevServer, LocalGatewayException

from chalicelib.api.http import unknown_route
from chalicelib.local.localstack import ROOT


class _V3RequestHandler(ChaliceRequestHandler):
    # Headers and body go out in two writes on a kept-alive connection: without TCP_NODELAY the
    # body waits for the client's delayed ACK of the headers (40 ms on Linux) on every request.
    disable_nagle_algorithm = True

    def _send_error_response(self, error: LocalGatewayException) -> None:
        if not isinstance(error, ForbiddenError):  # the app has no authorizers: a 403 here is a route it lacks
            super()._send_error_response(error)
            return
        status, body = unknown_route(self.command, self.path.partition("?")[0], str(uuid.uuid4()))
        self._send_http_response(status, {"Content-Type": "application/json"}, orjson.dumps(body))


def serve(host: str, port: int, stage: str = "local") -> None:
    """Serve the app as `chalice local --stage STAGE --no-autoreload` does (the stage's
    environment from .chalice/config.json), until interrupted."""
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")  # as Lambda logs
    config = CLIFactory(str(ROOT), environ=os.environ).create_config_obj(chalice_stage_name=stage)
    validate_routes(config.chalice_app.routes)  # what `chalice deploy` would refuse fails here too
    LocalDevServer(config.chalice_app, config, host, port, handler_cls=_V3RequestHandler).serve_forever()
