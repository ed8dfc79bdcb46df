"""Exactly once, per group of input files: the order of a scorer's effects, and how the next
holder of a lease finishes what a scorer that stopped left behind.

A scorer holds the lease of the keys it scores (chalicelib.state.leases), so nobody else scores them,
and finishes each group of files in this order (`finish`):
1. intent: record what the group will produce (each file's output file, status and record
   count) and count its files as pending, while the lease is held (ledger.intend);
2. write the output files, create-only (their names are fixed in the intent);
3. commit: record each file's outcome, count them, add the usage and drop the intent, in one
   transaction, while the lease is held (ledger.commit).
A scorer that dies leaves its intents behind. The next holder of the lease finishes them before
it scores anything (`recover`): a planned file that is there holds its entries' records, so they
are committed as planned; a file that is not there has its name claimed first (an empty result
file, written create-only), so the stopped scorer can never write it, and its entries are scored
again. A crash at any step neither loses a result nor writes a second one.

A scorer that only *paused* past its lease and resumes is fenced at every step: its intent and
its commit are conditional on the lease, and its files are create-only, so a name the new
holder claimed refuses it. It stops at the first refusal (leases.LeaseLost) and writes nothing
more. What the store and the ledger do is theirs (chalicelib.scoring.outputs, chalicelib.state.ledger); the
order is only here.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

from chalicelib.core.log import logger
from chalicelib.state.leases import Lease, may_recover
from chalicelib.state.ledger import Entry, Intent, Ledger


class ResultFiles(Protocol):
    """The output store as the protocol uses it (chalicelib.scoring.outputs.ResultFiles)."""

    def write(self, key: str, elements: list[dict]) -> None:
        """Create the file; raise leases.LeaseLost when its name is taken (claimed by another)."""

    def holds_records(self, key: str) -> bool | None:
        """None when there is no such file, False when it is only a claimed name."""

    def claim(self, key: str) -> bool:
        """Take the name with an empty file; False when a file is there already."""


def _untimed(stage: str) -> AbstractContextManager:
    return nullcontext()


def finish(ledger: Ledger, lease: Lease, files: ResultFiles, entries: list[Entry],
           documents: dict[str, list[dict]], *, model_seconds: float = 0.0, as_range: bool = False,
           timed: Callable[[str], AbstractContextManager] = _untimed) -> Intent:
    """Record the intent, write the group's files (`documents`: output key -> elements; empty
    ones are not written), and commit the entries (in a range record with `as_range`: see
    Ledger.commit). `timed(stage)` measures each step. A recovered intent is committed as key
    items, whatever its scorer meant: they are right for any group."""
    with timed("intent"):
        intent = ledger.intend(lease.scope, uuid.uuid4().hex, entries, lease.fence(), model_seconds=model_seconds)
    for key, elements in documents.items():
        if elements:
            lease.check()  # a scorer that knows it lost its lease writes nothing more
            with timed("write"):
                files.write(key, elements)
    with timed("commit"):
        ledger.commit(intent, lease.fence(), as_range=as_range)
    return intent


def recover(ledger: Ledger, lease: Lease, files: ResultFiles) -> list[Intent]:
    """Finish the intents that stopped scorers left and that this lease may finish
    (leases.may_recover: every one for the whole deployment; for a shard, its own and those
    of scopes that cannot be live beside it); the intents finished."""
    intents = [intent for intent in ledger.intents() if may_recover(lease.scope, intent.scope)]
    written: dict[str, bool] = {}
    for intent in intents:
        lease.beat()
        for output_key in {entry.output_key for entry in intent.entries} - set(written):
            # A name that holds only a claim (an earlier recovery that died after claiming it)
            # has no records: its entries are scored again, never adopted.
            found = files.holds_records(output_key)
            written[output_key] = not files.claim(output_key) if found is None else found
        adopted = [entry for entry in intent.entries if written[entry.output_key]]
        ledger.commit(intent, lease.fence(), written=adopted)
        logger.info("finished a stopped scorer's intent", extra={
            "intent": intent.token, "adopted": len(adopted), "to_score_again": len(intent.entries) - len(adopted)})
    return intents
