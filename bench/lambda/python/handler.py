"""The Python comparison for tally-api: the same PUT a POST /records does
(validate the body is a JSON object, one PutItem with tally's item layout),
written as a typical boto3 Lambda handler. The client is created at import,
as AWS recommends, so its cost is part of init."""
import json
import os
import time
import uuid

import boto3

TABLE = os.environ["TABLE_NAME"]
dynamodb = boto3.client("dynamodb", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))


def handler(event, context):
    try:
        data = json.loads(event.get("body") or "")
    except ValueError:
        return {"statusCode": 400, "body": json.dumps({"title": "invalid JSON"})}
    if not isinstance(data, dict):
        return {"statusCode": 422, "body": json.dumps({"title": "not an object"})}
    now = int(time.time() * 1000)
    rid = uuid.uuid4().hex
    day = time.strftime("%Y-%m-%d", time.gmtime(now / 1000))
    dynamodb.put_item(TableName=TABLE, Item={
        "pk": {"S": f"D#{day}#{int(rid[:4], 16) % 16:02d}"}, "sk": {"S": rid},
        "data": {"S": json.dumps(data, separators=(",", ":"))}, "received_at": {"N": str(now)},
    })
    return {"statusCode": 201, "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"id": rid, "received_at": now})}
