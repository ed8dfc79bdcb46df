"""One machine: the local stack (moto server, the API on chalice's local server), the worker that plays Lambda's
queue loop, and the `tfbatch` command. May import every other subpackage."""
