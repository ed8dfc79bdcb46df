"""bench/costs.py turns one bench/job.py report and the dated price table into dollars per
million files; checked here on a small report whose answer is known by hand."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import costs

PRICES = json.loads((Path(costs.__file__).parent / "prices-us-east-1.json").read_text())


def test_a_million_files_cost_what_the_counts_and_the_prices_say():
    report = {"stack": {"job_files_per_s": 1_000_000 / 3600},  # one hour for a million files
              "requests": {"requests_per_1000_files": {"s3 GetObject": 1000, "s3 PutObject": 4, "s3 ListObjects": 1,
                                                       "json AWSEvents.PutEvents": 4},
                           "request_bytes_per_1000_files": {"dynamodb TransactWriteItems": 1024 * 1000}}}
    paths = costs.estimate(report, PRICES)
    job = paths["backlog job (AWS Batch, g5.xlarge)"]
    assert job["instance"] == pytest.approx(PRICES["ec2_per_hour"]["g5.xlarge"], abs=0.01)
    assert job["s3"] == pytest.approx(1000 * PRICES["s3_get_per_thousand"] + 5 * PRICES["s3_put_list_per_thousand"],
                                      abs=0.01)
    # 1 KB per file written in transactions: two write units per file, plus four events per 1,000 files.
    assert job["bookkeeping"] == pytest.approx(2 * PRICES["dynamodb_per_million_write_units"]
                                               + 4000 / 1e6 * PRICES["eventbridge_per_million_events"], abs=0.01)
    sagemaker = paths["SageMaker Batch Transform (ml.g5.xlarge)"]
    assert sagemaker["instance"] == pytest.approx(PRICES["sagemaker_per_hour"]["ml.g5.xlarge"], abs=0.01)
    assert paths["upload path (Lambda)"]["lambda"] == pytest.approx(
        3600 * 4 * PRICES["lambda_gb_second"] + 0.1 * PRICES["lambda_per_million_requests"], abs=0.01)


def test_each_path_is_priced_from_its_own_counted_units_and_requests():
    counted = {"requests_per_1000_files": {"s3 GetObject": 1000}, "request_bytes_per_1000_files": {},
               "dynamodb_write_units_per_1000_files": 30, "dynamodb_read_units_per_1000_files": 0}
    uploads = {"requests_per_1000_files": {"s3 GetObject": 1000, "json AmazonSQS.ReceiveMessage": 100,
                                           "json AmazonSQS.DeleteMessageBatch": 100},
               "request_bytes_per_1000_files": {}, "dynamodb_write_units_per_1000_files": 2000,
               "dynamodb_read_units_per_1000_files": 1000}
    paths = costs.estimate({"stack": {"job_files_per_s": 1000}, "requests": counted, "upload_requests": uploads},
                           PRICES)
    job, upload = paths["backlog job (AWS Batch, g5.xlarge)"], paths["upload path (Lambda)"]
    assert job["bookkeeping"] == pytest.approx(0.03 * PRICES["dynamodb_per_million_write_units"], abs=0.01)
    assert upload["bookkeeping"] == pytest.approx(2 * PRICES["dynamodb_per_million_write_units"]
                                                  + PRICES["dynamodb_per_million_read_units"], abs=0.01)
    # 0.2 receives and deletes per file, plus S3's own send of each notification
    assert upload["queue"] == pytest.approx(1.2 * PRICES["sqs_per_million_requests"], abs=0.01)


def test_the_counting_proxy_prices_dynamodb_requests_in_units():
    from faultproxy import _units

    small = {"PutRequest": {"Item": {"k": {"S": "x"}}}}
    large = {"PutRequest": {"Item": {"k": {"S": "x" * 3000}}}}
    assert _units("BatchWriteItem", json.dumps({"RequestItems": {"t": [small, small, large]}}).encode()) == (5, 0)
    assert _units("TransactWriteItems", json.dumps({"TransactItems": [
        {"Put": {"Item": {"k": {"S": "x" * 1500}}}}, {"Update": {"Key": {"k": {"S": "y"}}}}]}).encode()) == (6, 0)
    assert _units("BatchGetItem", json.dumps({"RequestItems": {"t": {"Keys": [{}, {}, {}]}}}).encode()) == (0, 3)
