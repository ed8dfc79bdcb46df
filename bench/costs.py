"""What a million files cost on AWS, from what bench/job.py measured and counted in one run and
the dated price table beside this file (bench/prices-us-east-1.json).

    .venv/bin/python -m bench.costs [bench/results/job-<time>.json]   (default: the newest)

For each path, dollars per million input files, each from the requests counted on that path:
- backlog job: the GPU instance the stack's Batch environment prefers (g5.xlarge) for
  1,000,000 / files-per-second hours, plus its requests (per 1,000 files: S3 GETs, PUTs and
  LISTs; DynamoDB write and read units as the proxy counted them; events);
- upload path: the scoring function (4,096 MB) billed for the job's wall time per file (one
  scorer doing the same work, I/O waits included), one invocation per ten messages, the
  queue's requests as counted (plus S3's own send of each notification), and the requests the
  upload path made (the report's `upload_requests`; a report without them falls back to the
  job's, which undercounts this path);
- SageMaker Batch Transform for the same work: ml.g5.xlarge for the same hours, plus its S3
  GETs and PUTs (its own bookkeeping is in the instance price).
The throughput is this machine's (2 cores against a local moto server), not a g5.xlarge's: the
instance hours are a ceiling, and the ratio between the paths is what the numbers are for.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MILLION = 1_000_000
SCORING_FUNCTION_GB = 4.0  # .chalice/config.json: handle_tasks' lambda_memory_size
MESSAGES_PER_INVOCATION = 10  # app.py: the SQS handler's batch size


def _per_million(per_1000: dict[str, float], name: str) -> float:
    return per_1000.get(name, 0.0) * 1000


def _requests(counted: dict, prices: dict) -> dict[str, float]:
    """Dollars per million files for one path's counted requests: S3, the service's own
    bookkeeping (DynamoDB, events) and the queue."""
    requests = counted["requests_per_1000_files"]
    s3 = (_per_million(requests, "s3 GetObject") / 1000 * prices["s3_get_per_thousand"]
          + (_per_million(requests, "s3 PutObject") + _per_million(requests, "s3 ListObjects")) / 1000
          * prices["s3_put_list_per_thousand"])
    if "dynamodb_write_units_per_1000_files" in counted:
        write_units = counted["dynamodb_write_units_per_1000_files"] * 1000
        read_units = counted["dynamodb_read_units_per_1000_files"] * 1000
    else:  # an older report: units from request bytes (1 KB each, transactions twice), a read per request
        sizes = counted["request_bytes_per_1000_files"]
        write_units = sum(sizes.get(f"dynamodb {op}", 0) * 1000 / 1024 for op in ("BatchWriteItem", "UpdateItem",
                                                                                   "PutItem"))
        write_units += 2 * sizes.get("dynamodb TransactWriteItems", 0) * 1000 / 1024
        read_units = sum(_per_million(requests, f"dynamodb {op}") for op in ("GetItem", "Query", "BatchGetItem"))
    dynamodb = (write_units / MILLION * prices["dynamodb_per_million_write_units"]
                + read_units / MILLION * prices["dynamodb_per_million_read_units"])
    events = _per_million(requests, "json AWSEvents.PutEvents") / MILLION * prices["eventbridge_per_million_events"]
    queue = sum(number for name, number in requests.items() if name.startswith("json AmazonSQS.")) * 1000
    return {"s3": s3, "bookkeeping": dynamodb + events, "queue": queue / MILLION * prices["sqs_per_million_requests"]}


def estimate(report: dict, prices: dict) -> dict[str, dict[str, float]]:
    job_requests = _requests(report["requests"], prices)
    upload_requests = _requests(report.get("upload_requests", report["requests"]), prices)
    hours = MILLION / report["stack"]["job_files_per_s"] / 3600
    lambda_compute = hours * 3600 * SCORING_FUNCTION_GB * prices["lambda_gb_second"]
    invocations = MILLION / MESSAGES_PER_INVOCATION / MILLION * prices["lambda_per_million_requests"]
    notifications = prices["sqs_per_million_requests"]  # S3 sends one message per file
    if "upload_requests" not in report:  # no counted queue requests: a receive and a delete per batch
        upload_requests["queue"] = 2 * prices["sqs_per_million_requests"] / MESSAGES_PER_INVOCATION
    job = {"instance": hours * prices["ec2_per_hour"]["g5.xlarge"], "s3": job_requests["s3"],
           "bookkeeping": job_requests["bookkeeping"]}
    uploads = {"lambda": lambda_compute + invocations, "queue": upload_requests["queue"] + notifications,
               "s3": upload_requests["s3"], "bookkeeping": upload_requests["bookkeeping"]}
    requests = report["requests"]["requests_per_1000_files"]
    sagemaker = {"instance": hours * prices["sagemaker_per_hour"]["ml.g5.xlarge"],
                 "s3": _per_million(requests, "s3 GetObject") / 1000 * prices["s3_get_per_thousand"]
                 + _per_million(requests, "s3 PutObject") / 1000 * prices["s3_put_list_per_thousand"]}
    paths = {"backlog job (AWS Batch, g5.xlarge)": job, "upload path (Lambda)": uploads,
             "SageMaker Batch Transform (ml.g5.xlarge)": sagemaker}
    return {name: {**{part: round(value, 2) for part, value in parts.items()}, "total": round(sum(parts.values()), 2)}
            for name, parts in paths.items()}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    reports = sorted((HERE / "results").glob("job-*.json"))
    path = Path(args[0]) if args else next((p for p in reversed(reports) if "requests" in json.loads(p.read_text())),
                                            None)
    if path is None:
        raise SystemExit("no bench/job.py report with counted requests: run `python -m bench.job` first")
    report = json.loads(path.read_text())
    prices = json.loads((HERE / "prices-us-east-1.json").read_text())
    print(f"dollars per million files, from {path.name} and prices recorded {prices['recorded']} ({prices['region']}):")
    for name, parts in estimate(report, prices).items():
        detail = ", ".join(f"{part} {value:.2f}" for part, value in parts.items() if part != "total")
        print(f"  {name:42} ${parts['total']:>8.2f}   ({detail})")


if __name__ == "__main__":
    main()
