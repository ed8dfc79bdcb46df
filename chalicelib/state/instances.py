"""Service instances: their credentials and their usage counters.

Counters change only through atomic DynamoDB updates, so concurrent API calls and scoring
functions never lose an increment. Limits are enforced inside the same conditional update.
"""
from __future__ import annotations

import functools
import secrets
import uuid
from dataclasses import dataclass
from decimal import Decimal

from chalicelib.core import aws
from chalicelib.core.clock import now_iso
from chalicelib.core.errors import LimitExceeded, NotFound, Unauthorized
from chalicelib.core.settings import get_settings
from chalicelib.state import passwords, signin_throttle

COUNTERS = ("model_count", "deployment_count", "prediction_count", "computation_time")
MAX_USERNAME_BYTES = 256  # usernames are UUIDs; DynamoDB refuses empty keys and keys over 2 KB


@dataclass(frozen=True)
class NewInstance:
    instance_id: str
    name: str
    username: str
    password: str  # shown once, to the admin who created it; only its hash is stored


def create(name: str) -> NewInstance:
    settings = get_settings()
    instance_id = str(uuid.uuid4())
    username = str(uuid.uuid4())
    password = passwords.new_password()
    now = now_iso()
    aws.table(settings.instances_table).put_item(
        Item={
            "instance_id": instance_id,
            "name": name,
            "status": "Active",
            "plan": "standard",
            "created_at": now,
            "modified_at": now,
            **{counter: 0 for counter in COUNTERS},
        },
        ConditionExpression="attribute_not_exists(instance_id)",
    )
    aws.table(settings.credentials_table).put_item(
        Item={
            "username": username,
            "instance_id": instance_id,
            "password_hash": passwords.hash_password(password),
        },
        ConditionExpression="attribute_not_exists(username)",
    )
    return NewInstance(instance_id, name, username, password)


def authenticate(username: str, password: str) -> str:
    """The instance id these credentials belong to; Unauthorized otherwise (same answer for both).

    The attempt is counted, and refused while the username is locked, before any password is
    checked (chalicelib.state.signin_throttle). A known and an unknown username then cost the same: one
    lookup and one scrypt verification, against a dummy hash when there is no such username.
    """
    signin_throttle.admit(username)
    item = _credentials(username)
    stored = item["password_hash"] if item else _dummy_hash()  # equal work either way
    if not passwords.verify_password(password, stored) or item is None:
        raise Unauthorized("The username or password is wrong.", code="invalid_credentials")
    signin_throttle.succeeded(username)
    return item["instance_id"]


def _credentials(username: str) -> dict | None:
    if not 0 < len(username.encode()) <= MAX_USERNAME_BYTES:
        return None  # no such username exists, and DynamoDB would refuse the key
    return aws.table(get_settings().credentials_table).get_item(Key={"username": username}).get("Item")


@functools.cache
def _dummy_hash() -> str:
    """A hash of a password nobody holds, made once per process: hashing it on every unknown
    username would cost a second scrypt that a known username does not."""
    return passwords.hash_password(secrets.token_urlsafe(24))


def get(instance_id: str) -> dict:
    item = aws.table(get_settings().instances_table).get_item(Key={"instance_id": instance_id}).get("Item")
    if item is None:
        raise NotFound(f"Instance {instance_id} does not exist.", target={"type": "instance", "id": instance_id})
    return item


def add_usage(instance_id: str, *, predictions: int, seconds: float) -> None:
    """Count an online request's records and model seconds, in one write. (Batch scoring adds its
    usage with each ledger commit, exactly once; an online answer is not ledgered, so a write
    retried after its answer was lost may count a request twice.)"""
    aws.conditionally(
        aws.table(get_settings().instances_table).update_item, Key={"instance_id": instance_id},
        UpdateExpression="ADD prediction_count :predictions, computation_time :seconds SET modified_at = :now",
        ConditionExpression="attribute_exists(instance_id)",
        ExpressionAttributeValues={":predictions": predictions, ":seconds": Decimal(str(round(seconds, 3))),
                                   ":now": now_iso()})


def add(instance_id: str, counter: str, amount: int | float, *, limit: int | None = None) -> None:
    """Atomically add to a counter; with a limit, refuse the increment that would pass it."""
    condition = "attribute_exists(instance_id)"
    values: dict = {":amount": Decimal(str(amount))}
    if limit is not None:
        condition += f" AND {counter} < :limit"
        values[":limit"] = limit
    if aws.conditionally(
        aws.table(get_settings().instances_table).update_item,
        Key={"instance_id": instance_id},
        UpdateExpression=f"ADD {counter} :amount SET modified_at = :now",
        ConditionExpression=condition,
        ExpressionAttributeValues={**values, ":now": now_iso()},
    ):
        return
    if limit is None:
        raise NotFound(f"Instance {instance_id} does not exist.")
    raise LimitExceeded(
        f"This instance has reached its limit of {limit} for {counter}. Delete some before creating more.",
        target={"type": "usage", "name": counter},
    )
