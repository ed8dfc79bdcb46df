"""tfbatch: deploy TensorFlow SavedModels and score the files that land in a bucket.

Modules here are imported by the API Lambda (zip, no TensorFlow) and by the image functions
(TensorFlow installed). Only `savedmodel`, `inspection` and the scoring modules import
TensorFlow, and only the image functions import them.
"""
