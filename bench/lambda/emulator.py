"""A minimal AWS Lambda Runtime API emulator that measures cold starts.

For each run it starts the function's bootstrap as a fresh process with the
Lambda environment (AWS_LAMBDA_RUNTIME_API pointing here), then measures:
  init       process spawn -> first GET /2018-06-01/runtime/invocation/next
  first      event handed out -> POST .../invocation/{id}/response received
  rss        VmHWM (peak RSS) of the process after its last response
  warm       event handed out -> response, for --warm further invocations
and stops the process when it asks for the event after those. Prints one JSON
line with the medians (and the max RSS) over the runs.

    python emulator.py --runs 5 --event EVENT.json --label NAME -- CMD [ARGS...]
"""
import argparse
import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

BASE = "/2018-06-01/runtime"


class State:
    def __init__(self, event, warm):
        self.event = event
        self.warm = warm
        self.reset(None)

    def reset(self, pid):
        self.pid = pid
        self.spawned = 0.0
        self.first_next = None
        self.event_sent = None
        self.responded = None
        self.first_ms = None
        self.rss_kb = None
        self.hwm_kb = None
        self.status = None
        self.error = None
        self.served = 0
        self.warm_ms = []
        self.done = threading.Event()


def vm(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def make_handler(state):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, code, body=b"", headers=None):
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path != f"{BASE}/invocation/next":
                return self.reply(404)
            now = time.perf_counter()
            if state.first_next is None:
                state.first_next = now
            if state.served <= state.warm:
                state.served += 1
                rid = str(uuid.uuid4())
                body = state.event
                state.event_sent = time.perf_counter()
                return self.reply(200, body, {
                    "Content-Type": "application/json",
                    "Lambda-Runtime-Aws-Request-Id": rid,
                    "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30_000),
                    "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:bench",
                    "Lambda-Runtime-Trace-Id": "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1",
                })
            # Second poll: the first invocation is over; park until the process is stopped.
            state.done.set()
            time.sleep(30)
            return self.reply(204)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if "/invocation/" in self.path and self.path.endswith("/response") and state.responded:
                state.warm_ms.append((time.perf_counter() - state.event_sent) * 1000)
                state.hwm_kb = vm(state.pid, "VmHWM")
                self.reply(202, b'{"status":"OK"}')
            elif "/invocation/" in self.path and self.path.endswith("/response"):
                state.responded = time.perf_counter()
                state.first_ms = (state.responded - state.event_sent) * 1000
                state.hwm_kb = vm(state.pid, "VmHWM")
                state.rss_kb = vm(state.pid, "VmRSS")
                try:
                    state.status = json.loads(body).get("statusCode", "ok")
                except (ValueError, AttributeError):
                    state.status = "ok"
                self.reply(202, b'{"status":"OK"}')
            elif self.path.endswith("/error"):
                state.error = body.decode(errors="replace")[:500]
                state.responded = time.perf_counter()
                self.reply(202, b'{"status":"OK"}')
                state.done.set()
            else:
                self.reply(404)

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--event", required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--memory", default="128")
    ap.add_argument("--warm", type=int, default=10)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    with open(a.event, "rb") as f:
        state = State(f.read(), a.warm)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    env = dict(os.environ)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": a.label,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": a.memory,
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{a.label}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_EXECUTION_ENV": "AWS_Lambda_bench",
        "LAMBDA_TASK_ROOT": os.getcwd(),
        "_HANDLER": "handler.handler",
    })
    runs = []
    for _ in range(a.runs):
        state.reset(None)
        state.spawned = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        state.pid = proc.pid
        finished = state.done.wait(60)
        proc.kill()
        _, err = proc.communicate()
        if not finished or state.responded is None or state.error:
            sys.stderr.write(f"{a.label}: run failed ({state.error or 'timeout'}); stderr:\n{err.decode(errors='replace')[-2000:]}\n")
            sys.exit(1)
        runs.append({
            "init_ms": (state.first_next - state.spawned) * 1000,
            "first_ms": state.first_ms,
            "hwm_mb": (state.hwm_kb or 0) / 1024,
            "status": state.status,
            "warm_ms": statistics.median(state.warm_ms) if state.warm_ms else None,
        })
    med = lambda k: statistics.median(r[k] for r in runs)
    print(json.dumps({
        "label": a.label, "runs": len(runs),
        "init_ms": round(med("init_ms"), 1), "first_ms": round(med("first_ms"), 1),
        "rss_mb": round(max(r["hwm_mb"] for r in runs), 1), "status": runs[0]["status"],
        "warm_ms": round(statistics.median(r["warm_ms"] for r in runs), 2) if a.warm else None,
        "init_all_ms": [round(r["init_ms"], 1) for r in runs],
    }))


if __name__ == "__main__":
    main()
