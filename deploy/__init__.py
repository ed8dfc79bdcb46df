"""Packaging tfbatch for AWS (not part of the Lambda zip)."""
