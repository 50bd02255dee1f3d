"""A minimal Python Lambda runtime loop (what awslambdaric does, without its
extras): import the handler, then poll the Runtime API for events forever."""
import json
import os
import urllib.request

import handler

API = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime/invocation"

while True:
    with urllib.request.urlopen(f"{API}/next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    result = handler.handler(event, None)
    req = urllib.request.Request(f"{API}/{rid}/response", data=json.dumps(result).encode(), method="POST")
    urllib.request.urlopen(req).read()
