"""Scoring, as the image function and the backlog job run it: input and output formats, the
model checks, the engine, the data path, deployment runs, the exactly-once protocol, and the
task handlers. Imports state and core; never api, so `tfbatch score` needs no Chalice."""
