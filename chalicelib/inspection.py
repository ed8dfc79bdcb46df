"""Model inspection (TensorFlow side): does the uploaded SavedModel load, and what does it serve?

Runs in the image function on AWS and in the local worker; both call `inspect_version`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from chalicelib import archives, aws, models, savedmodel
from chalicelib.log import logger
from chalicelib.settings import get_settings


def inspect_version(model_id: str, version_id: str) -> str:
    """Inspect one uploaded version and record the outcome; returns the new status."""
    version = models.load_version(model_id, version_id)
    with tempfile.TemporaryDirectory(prefix="tfbatch-inspect-") as scratch:
        archive = Path(scratch) / "model.archive"
        aws.client("s3").download_file(get_settings().models_bucket, version["archive_key"], str(archive))
        try:
            with open(archive, "rb") as stream:
                model_dir = archives.extract(stream, Path(scratch) / "model", models.archive_limits())
            signatures = savedmodel.read_signatures(model_dir)
            savedmodel.load(model_dir)
        except Exception as error:  # any failure to read or load makes the version invalid, with why
            reason = f"{type(error).__name__}: {error}".strip()[:2000]
            logger.warning("model version invalid", extra={"model_id": model_id, "version_id": version_id,
                                                           "reason": reason})
            models.record_inspection(model_id, version_id, status=models.INVALID,
                                     details={"message": f"The model cannot be served: {reason}"})
            return models.INVALID
    models.record_inspection(model_id, version_id, status=models.READY,
                             details={"message": "The model loads and its signatures are recorded."},
                             signatures=signatures)
    logger.info("model version ready", extra={"model_id": model_id, "version_id": version_id})
    return models.READY
