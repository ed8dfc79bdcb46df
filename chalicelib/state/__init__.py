"""One module per stored item (instances, models, deployments, leases, the ledger, connection
keys, subscriptions, sign-in attempts): the only code that knows table and attribute names and
the conditions on them. Imports core only; no TensorFlow, no NumPy, no Chalice."""
