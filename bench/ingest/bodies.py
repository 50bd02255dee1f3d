"""Request bodies for the ingest benchmark: one ~250-byte nested event (the
same shape as the summary benchmark's records) and a batch of 1000."""
import json
import random
import sys

rng = random.Random(42)


def event():
    return {
        "event": rng.choice(["page_view", "click", "purchase", "signup", "logout"]),
        "user": {"id": rng.randrange(1_000_000), "name": f"user-{rng.randrange(50_000)}",
                 "plan": rng.choice(["free", "pro", "team"]),
                 "geo": {"city": rng.choice(["Lyon", "Paris", "Berlin", "Oslo"]),
                         "lat": round(rng.uniform(-90, 90), 4), "lon": round(rng.uniform(-180, 180), 4)}},
        "value": round(rng.uniform(0, 1000), 2), "items": rng.randrange(12), "ok": rng.random() < 0.9,
        "session": f"s-{rng.getrandbits(64):016x}", "tags": ["click", "web"], "ref": None,
        "ms": rng.randrange(5000),
    }


with open(sys.argv[1], "w") as f:
    json.dump(event(), f, separators=(",", ":"))
with open(sys.argv[2], "w") as f:
    json.dump([event() for _ in range(1000)], f, separators=(",", ":"))
