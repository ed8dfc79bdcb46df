"""A scorer process that starts without any model loaded: run by bench/uploads.py.

Like a new Lambda container after its init phase (TensorFlow imported, the AWS clients made,
an empty /tmp), it scores the given uploads one after another, the way the scoring function
does (`runner.score_uploads`), and prints how long each took, as a JSON list. bench/uploads.py
chooses the uploads so that the differences show what a new model version costs.

    python bench/cold_scorer.py INSTANCE DEPLOYMENT:KEY:ETAG:SIZE ...
"""
from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from chalicelib.core import aws
from chalicelib.local import localstack  # noqa: E402


def main(instance_id: str, *uploads: str) -> None:
    os.environ.update(localstack.local_environment())
    from chalicelib.scoring import runner

    tf.constant(1.0)  # TensorFlow initialised, as in the plain baseline
    runner.open_run(instance_id, uploads[0].split(":")[0])  # the clients a container makes once
    aws.client("s3")
    seconds = []
    for upload in uploads:
        deployment_id, key, etag, size = upload.rsplit(":", 3)
        started = time.perf_counter()
        summary = runner.score_uploads(instance_id, deployment_id, [(key, etag, int(size))])
        seconds.append(time.perf_counter() - started)
        if summary.scored != 1:
            raise SystemExit(f"{key} was not scored: {summary}")
    print(json.dumps(seconds))


if __name__ == "__main__":
    main(*sys.argv[1:])
