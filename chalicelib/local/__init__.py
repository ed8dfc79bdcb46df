"""One machine: the local stack (moto server, `chalice local`), the worker that plays Lambda's
queue loop, and the `tfbatch` command. May import every other subpackage."""
