"""Result and error objects in users' stores: how they are written so that each input's record
lands exactly once, and so that they are never read back as inputs.

- Marked: each carries the metadata RESULT_MARK (x-amz-meta-tfbatch-result on S3), and an input
  that has it is skipped (pipeline.fetch), so a deployment whose output is another's input (or
  its own, however the URLs are written) never scores results again, in a loop.
- Create-only (S3 If-None-Match: *): names are never reused, so a name already taken means
  another scorer claimed it, and the late writer is refused (the fencing in ledger.py).
- Claimable: a scorer that takes over writes an empty file (CLAIM) under each name a stopped
  scorer had planned but not written, so that scorer can never write it.
"""
from __future__ import annotations

import time
from typing import Any

import obstore
from obstore.exceptions import AlreadyExistsError, GenericError
from obstore.store import LocalStore

from chalicelib.core.log import logger
from chalicelib.scoring import results
from chalicelib.state.leases import LeaseLost

RESULT_MARK = "tfbatch-result"
ATTRIBUTES = {"Content-Type": "application/json", RESULT_MARK: "1"}


def put(store, key: str, items: list[dict[str, Any]]) -> None:
    """Write a result or error object, marked as one (a local folder keeps no metadata: there
    `tfbatch score` keeps its output out of its input by path). Create-only: names are never
    reused, and a name already taken means another scorer claimed it (ledger.py), so the write
    is refused with obstore's AlreadyExistsError."""
    _create(store, key, results.dumps(items))


# The bytes of a claimed name (`claim`): a scorer never writes an empty result file, so an
# object of exactly these bytes holds no records.
CLAIM = results.dumps([])
_CREATE_ATTEMPTS = 4  # obstore does not retry a create-only PUT whose connection failed


def _create(store, key: str, data: bytes) -> None:
    """A create-only PUT, tried again when the network failed it (obstore retries 5xx, but not
    a conditional PUT whose connection dropped: it may have landed). A name found taken holds
    either these very bytes, when an earlier try landed and only its answer was lost (success),
    or another scorer's object (AlreadyExistsError): without that check, a write whose answer
    was lost would stop its scorer, and a claim would be mistaken for a stopped scorer's file."""
    attributes = None if isinstance(store, LocalStore) else ATTRIBUTES
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            obstore.put(store, key, data, attributes=attributes, mode="create")
            return
        except AlreadyExistsError:
            if _holds(store, key, data):
                logger.info("an earlier try of a create-only write landed", extra={"key": key})
                return
            raise
        except GenericError as error:  # transport errors; refusals (permissions, no bucket) have their own classes
            if attempt == _CREATE_ATTEMPTS - 1:
                raise
            logger.info("a create-only write failed; trying again", extra={"key": key, "error": type(error).__name__})
            time.sleep(0.1 * 2 ** attempt)


def _holds(store, key: str, data: bytes) -> bool:
    try:
        return bytes(obstore.get(store, key).bytes()) == data
    except FileNotFoundError:
        return False


def claim(store, key: str) -> bool:
    """Take an output name a scorer that stopped had planned, so that scorer can never write it
    (an empty result file stays there); False when that scorer's file is there already. A name
    claimed before (by an earlier try, or an earlier recovery that died) counts as claimed."""
    try:
        _create(store, key, CLAIM)
    except AlreadyExistsError:
        return False
    return True


def holds_records(store, key: str) -> bool | None:
    """Whether an output object holds a scorer's records: None when there is no such object,
    False when it is only a claimed name (CLAIM), which must never be adopted as results."""
    try:
        return obstore.head(store, key)["size"] != len(CLAIM)
    except FileNotFoundError:
        return None


class ResultFiles:
    """One deployment's output store, as chalicelib.scoring.exactly_once writes to it."""

    def __init__(self, store):
        self.store = store

    def write(self, key: str, elements: list[dict[str, Any]]) -> None:
        try:
            put(self.store, key, elements)
        except AlreadyExistsError:
            raise LeaseLost(f"output '{key}' was claimed by the scorer that took over; this one stops "
                            "without writing more") from None

    def holds_records(self, key: str) -> bool | None:
        return holds_records(self.store, key)

    def claim(self, key: str) -> bool:
        return claim(self.store, key)
