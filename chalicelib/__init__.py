"""tfbatch: deploy TensorFlow SavedModels and score the files that land in a bucket.

The tree follows the two artifacts. The API function (Chalice's zip, no TensorFlow, no NumPy)
runs `app.py`, `api/`, `state/` and `core/`; the scoring function and the backlog job (the
TensorFlow image) run `scoring/` over the same `state/` and `core/`; `local/` runs both on one
machine against the moto server.

    core/     settings, AWS clients, logging, errors, messages, the archive format
    state/    one module per stored item: the only code that knows tables, attributes, conditions
    api/      the v3 REST API: HTTP conventions, request schemas, views, the request handlers
    scoring/  formats, the model checks, the engine, the data path, runs and the exactly-once protocol
    local/    the local stack, the worker that plays Lambda, the `tfbatch` command

The dependency rule (tests/test_layout.py checks it on every import, lazy ones included):
core imports only core; state imports core; api imports state and core; scoring imports state
and core; local may import anything. So the API never pulls in TensorFlow, and `tfbatch score`
never pulls in Chalice.
"""

# Which subpackages each subpackage may import (tests/test_layout.py reads this).
MAY_IMPORT = {
    "core": {"core"},
    "state": {"core", "state"},
    "api": {"core", "state", "api"},
    "scoring": {"core", "state", "scoring"},
    "local": {"core", "state", "api", "scoring", "local"},
}
