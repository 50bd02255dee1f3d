"""The original app's weekly job, reimplemented faithfully as a baseline: a
full Scan of the DynamoDB table into memory, then one JSON dump to S3.

    python scan_dump.py TABLE BUCKET        (AWS_ENDPOINT_URL points at moto)

Prints items, seconds and the dump's size; peak RSS comes from /usr/bin/time.
"""
import json
import sys
import time

import boto3

table_name, bucket = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
table = boto3.resource("dynamodb").Table(table_name)
items, kwargs = [], {}
while True:
    page = table.scan(**kwargs)
    items.extend(page["Items"])
    if "LastEvaluatedKey" not in page:
        break
    kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
body = json.dumps(items, default=str)
boto3.client("s3").put_object(Bucket=bucket, Key="dump/all.json", Body=body.encode())
secs = time.perf_counter() - t0
print(f"items={len(items)} secs={secs:.3f} records_per_s={len(items) / secs:.0f} dump_bytes={len(body)}")
