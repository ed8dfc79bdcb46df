"""Settings read from the environment, once per process.

Every name has a default derived from the stage, so the local stack needs no configuration;
on AWS the CloudFormation stack sets the real names (buckets are global, so they carry the
account id there).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from chalicelib.core import caches


@dataclass(frozen=True)
class Settings:
    stage: str
    region: str
    aws_endpoint: str | None  # None on AWS; the moto server's URL on the local stack
    instances_table: str
    credentials_table: str
    models_table: str
    versions_table: str
    deployments_table: str
    ledger_table: str
    groups_table: str  # the ledger's intents and committed groups (ledger.py)
    subscriptions_table: str
    signin_attempts_table: str  # sign-in throttling per username (chalicelib.state.signin_throttle)
    models_bucket: str
    tasks_queue: str
    dead_letter_queue: str
    event_bus: str
    signing_key_secret: str
    secret_prefix: str  # deployments' connection keys live under "<prefix>/deployments/"
    token_ttl_seconds: int
    max_archive_bytes: int
    max_inflated_bytes: int  # all files of one version, extracted; derived from ephemeral_storage_mb
    max_archive_entries: int
    max_compression_ratio: int  # inflated over compressed bytes, checked while inflating (archives.py)
    ephemeral_storage_mb: int  # the image functions' /tmp (Lambda EphemeralStorage, set by the stack)
    model_limit: int
    deployment_limit: int
    batch_size: int  # records per model call (the rule: chalicelib.scoring.engine.records_per_call)
    batch_size_explicit: bool  # TFBATCH_BATCH_SIZE was given: no device factor on top
    model_call_seconds: float  # one model call past this fails its files (engine.ModelCallTimeout)
    model_load_seconds: float  # a version whose load runs past this is invalid (engine.ModelLoadTimeout)
    max_output_bytes: int  # output tensor bytes one input file may produce (pipeline.predict)
    files_per_output: int  # input files per output file (and per ledger intent)
    fetch_concurrency: int
    max_input_bytes: int
    lease_seconds: int  # after this, the lease of a scorer that went silent is taken over
    poll_seconds: int  # how often the local worker polls stores that cannot notify
    worker_concurrency: int  # batches the local worker handles at once (Lambda's concurrency)
    backlog_threshold: int  # waiting upload messages (or listed files) beyond which the backlog job takes over
    online_function: str | None  # the Lambda function that scores online requests; None scores in this process
    batch_job_queue: str | None  # AWS Batch: where backlog jobs go; None runs them in the scoring process
    batch_job_definition: str | None
    backlog_shards: int  # array children per backlog job, each scoring its share of the keys
    signin_free_failures: int  # wrong passwords per username and window before sign-in locks
    signin_window_seconds: int  # the window those failures are counted in
    signin_lock_seconds: int  # the first lock; each further lock doubles it
    signin_max_lock_seconds: int  # the longest lock

    @property
    def model_cache_bytes(self) -> int:
        """What extracted model copies may take on local disk: the ephemeral storage less the
        reserve and the room a new version needs (its archive's download and its extraction)."""
        room = TMP_RESERVE_BYTES + self.max_archive_bytes + self.max_inflated_bytes
        return max(0, self.ephemeral_storage_mb * MIB - room)


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _bounded(name: str, default: int, lowest: int, highest: int) -> int:
    value = _int(name, default)
    if not lowest <= value <= highest:
        raise ValueError(f"{name} must be between {lowest} and {highest}, not {value}")
    return value


MIB = 1024 * 1024
MAX_FILES_PER_OUTPUT = 1000  # a group's intent must fit in one ledger transaction (ledger.py)
EPHEMERAL_STORAGE_MB = 4096  # what the stack (deploy/package.py) gives the image functions unless told otherwise
TMP_RESERVE_BYTES = 64 * MIB  # /tmp that TensorFlow, Python and the runtime use besides the model copies


def _max_inflated_default(ephemeral_storage_mb: int, max_archive_bytes: int) -> int:
    """Half of the ephemeral storage left after the reserve and one archive's download: the other
    half holds the cached copies (Settings.model_cache_bytes), so a new version of the largest
    accepted size always fits next to them, its archive included, and never fills /tmp."""
    return max(0, (ephemeral_storage_mb * MIB - TMP_RESERVE_BYTES - max_archive_bytes) // 2)


@caches.per_process
def get_settings() -> Settings:
    stage = os.environ.get("TFBATCH_STAGE", "local")
    endpoint = os.environ.get("TFBATCH_AWS_ENDPOINT") or None
    if endpoint is None and stage == "local":
        endpoint = f"http://127.0.0.1:{os.environ.get('TFBATCH_MOTO_PORT', '5000')}"
    prefix = f"tfbatch-{stage}"
    env = os.environ.get
    ephemeral_mb = _int("TFBATCH_EPHEMERAL_STORAGE_MB", EPHEMERAL_STORAGE_MB)
    max_archive = _int("TFBATCH_MAX_ARCHIVE_BYTES", 200 * MIB)
    return Settings(
        stage=stage,
        region=env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1",
        aws_endpoint=endpoint,
        instances_table=env("TFBATCH_INSTANCES_TABLE", f"{prefix}-instances"),
        credentials_table=env("TFBATCH_CREDENTIALS_TABLE", f"{prefix}-credentials"),
        models_table=env("TFBATCH_MODELS_TABLE", f"{prefix}-models"),
        versions_table=env("TFBATCH_VERSIONS_TABLE", f"{prefix}-model-versions"),
        deployments_table=env("TFBATCH_DEPLOYMENTS_TABLE", f"{prefix}-deployments"),
        ledger_table=env("TFBATCH_LEDGER_TABLE", f"{prefix}-ledger"),
        groups_table=env("TFBATCH_GROUPS_TABLE", f"{prefix}-groups"),
        subscriptions_table=env("TFBATCH_SUBSCRIPTIONS_TABLE", f"{prefix}-subscriptions"),
        signin_attempts_table=env("TFBATCH_SIGNIN_ATTEMPTS_TABLE", f"{prefix}-signin-attempts"),
        models_bucket=env("TFBATCH_MODELS_BUCKET", f"{prefix}-models"),
        tasks_queue=env("TFBATCH_TASKS_QUEUE", f"{prefix}-tasks"),
        dead_letter_queue=env("TFBATCH_DEAD_LETTER_QUEUE", f"{prefix}-tasks-dlq"),
        event_bus=env("TFBATCH_EVENT_BUS", "default"),
        signing_key_secret=env("TFBATCH_SIGNING_KEY_SECRET", f"{prefix}/token-signing-key"),
        secret_prefix=env("TFBATCH_SECRET_PREFIX", f"tfbatch/{stage}"),
        token_ttl_seconds=_int("TFBATCH_TOKEN_TTL_SECONDS", 3600),
        max_archive_bytes=max_archive,
        max_inflated_bytes=_int("TFBATCH_MAX_INFLATED_BYTES", _max_inflated_default(ephemeral_mb, max_archive)),
        max_archive_entries=_int("TFBATCH_MAX_ARCHIVE_ENTRIES", 10_000),
        max_compression_ratio=_int("TFBATCH_MAX_COMPRESSION_RATIO", 100),
        ephemeral_storage_mb=ephemeral_mb,
        model_limit=_int("TFBATCH_MODEL_LIMIT", 1000),
        deployment_limit=_int("TFBATCH_DEPLOYMENT_LIMIT", 1000),
        batch_size=_int("TFBATCH_BATCH_SIZE", 256),
        batch_size_explicit="TFBATCH_BATCH_SIZE" in os.environ,
        model_call_seconds=float(env("TFBATCH_MODEL_CALL_SECONDS", 120)),
        # Loading runs the model's resource initializers (vocabularies, tables): large ones take
        # a while, a spinning one forever. 300 s leaves a 900 s Lambda time to score after.
        model_load_seconds=float(env("TFBATCH_MODEL_LOAD_SECONDS", 300)),
        max_output_bytes=_int("TFBATCH_MAX_OUTPUT_BYTES", 64 * MIB),
        files_per_output=_bounded("TFBATCH_FILES_PER_OUTPUT", 256, 1, MAX_FILES_PER_OUTPUT),
        fetch_concurrency=_int("TFBATCH_FETCH_CONCURRENCY", 32),
        max_input_bytes=_int("TFBATCH_MAX_INPUT_BYTES", 16 * 1024 * 1024),
        lease_seconds=_int("TFBATCH_LEASE_SECONDS", 120),
        poll_seconds=_int("TFBATCH_POLL_SECONDS", 5),
        worker_concurrency=_int("TFBATCH_WORKER_CONCURRENCY", 4),
        backlog_threshold=_int("TFBATCH_BACKLOG_THRESHOLD", 200),
        online_function=env("TFBATCH_ONLINE_FUNCTION") or None,
        batch_job_queue=env("TFBATCH_BATCH_JOB_QUEUE") or None,
        batch_job_definition=env("TFBATCH_BATCH_JOB_DEFINITION") or None,
        backlog_shards=_int("TFBATCH_BACKLOG_SHARDS", 1),
        signin_free_failures=_int("TFBATCH_SIGNIN_FREE_FAILURES", 5),
        signin_window_seconds=_int("TFBATCH_SIGNIN_WINDOW_SECONDS", 15 * 60),
        signin_lock_seconds=_int("TFBATCH_SIGNIN_LOCK_SECONDS", 60),
        signin_max_lock_seconds=_int("TFBATCH_SIGNIN_MAX_LOCK_SECONDS", 15 * 60),
    )
