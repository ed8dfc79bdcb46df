"""Model inspection (TensorFlow side): does the uploaded SavedModel load, and what does it serve?

Runs in the image function on AWS and in the local worker; both call `inspect_version`.
"""
from __future__ import annotations

from chalicelib.core.log import logger
from chalicelib.scoring import engine, graphcheck, savedmodel
from chalicelib.state import models


def inspect_version(model_id: str, version_id: str) -> str:
    """Inspect one uploaded version and record the outcome; returns the new status.

    The graphs are checked against the op allow-list before anything loads them: a refused
    model is never loaded or called, not even for the warm-up. Then it goes through the scoring
    engine's cache, so the model stays loaded in this process, each signature called once, for
    the deployments that follow."""
    version = models.load_version(model_id, version_id)
    try:
        if version.get("upload") == "direct" and not version.get("archive_sha256"):
            # Uploaded straight to the bucket: the API never saw the bytes, so their digest is
            # taken here, once, from the copy this inspection checks and loads.
            digest = engine.fetch_digest(version_id, version["archive_key"])
            version = models.record_digest(model_id, version_id, digest)
        archive = engine.StoredArchive.of(version)
        with engine.extracted(archive) as model_dir:
            savedmodel.check(model_dir)
            signatures = savedmodel.read_signatures(model_dir)
        engine.preload(archive, [signature["name"] for signature in signatures])
    except Exception as error:  # any failure to read or load makes the version invalid, with why
        reason = (str(error) if isinstance(error, graphcheck.RefusedModel)
                  else f"{type(error).__name__}: {error}").strip()[:2000]
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
