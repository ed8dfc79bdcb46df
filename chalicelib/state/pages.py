"""Paging through one partition of a table, for the API's lists."""
from __future__ import annotations

from typing import Any

from boto3.dynamodb.conditions import Key


def query(table, partition: tuple[str, str], sort_key: str, limit: int, start: str | None, *,
          filter_expression=None, newest_first: bool = False) -> tuple[list[dict], bool]:
    """Up to `limit` items of a partition after the sort key `start` (before it, `newest_first`),
    and whether more follow (one item is read past the page to know; a filter may take several
    reads to fill it)."""
    name, value = partition
    request: dict[str, Any] = {"KeyConditionExpression": Key(name).eq(value), "Limit": limit + 1,
                               "ScanIndexForward": not newest_first}
    if filter_expression is not None:
        request["FilterExpression"] = filter_expression
    if start:
        request["ExclusiveStartKey"] = {name: value, sort_key: start}
    items: list[dict] = []
    while len(items) <= limit:
        result = table.query(**request)
        items += result["Items"]
        if "LastEvaluatedKey" not in result:
            break
        request["ExclusiveStartKey"] = result["LastEvaluatedKey"]
    return items[:limit], len(items) > limit
