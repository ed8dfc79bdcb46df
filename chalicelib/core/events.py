"""Events for automation: when a result file is written and when a deployment's work is done.

Published to EventBridge (on the local stack, the same API on moto) with source `tfbatch`, so
other systems react to results instead of polling. Publishing is best effort: a failure is
logged and never undoes or blocks the scoring it reports.
"""
from __future__ import annotations

import orjson

from chalicelib.core import aws
from chalicelib.core.log import logger
from chalicelib.core.settings import get_settings

SOURCE = "tfbatch"
RESULTS_WRITTEN = "Result files written"
DEPLOYMENT_DONE = "Deployment backlog done"


def publish(detail_type: str, detail: dict) -> None:
    entry = {"Source": SOURCE, "DetailType": detail_type, "Detail": orjson.dumps(detail).decode(),
             "EventBusName": get_settings().event_bus}
    try:
        response = aws.client("events").put_events(Entries=[entry])
        if response.get("FailedEntryCount"):
            logger.error("event not accepted", extra={"detail_type": detail_type, "entries": response["Entries"]})
    except Exception:
        logger.exception("publishing an event failed", extra={"detail_type": detail_type})
