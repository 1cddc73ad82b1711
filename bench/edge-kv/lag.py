"""How stale a node's Edge KV replica is: writes through node A's admin API, and how long
until node B's replica (GET /v1/kv/<key>?replica) has each write. Polls B as fast as one
keep-alive connection allows, so each figure includes a poll's round trip (~0.1-0.3 ms).

    python3 lag.py A_ADMIN B_ADMIN [writes]     (addresses as host:port)
"""
import http.client
import json
import statistics
import sys
import time


def main():
    a, b = sys.argv[1], sys.argv[2]
    writes = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    ca = http.client.HTTPConnection(a)
    cb = http.client.HTTPConnection(b)
    lags, write_ms = [], []
    for i in range(writes):
        body = json.dumps({"value": str(i)})
        t0 = time.perf_counter()
        ca.request("PUT", "/v1/kv/bench/lag", body, {"Content-Type": "application/json"})
        r = ca.getresponse()
        answer = json.loads(r.read())
        if r.status != 200:
            sys.exit(f"write {i}: {r.status} {answer}")
        t1 = time.perf_counter()
        revision = answer["revision"]
        deadline = t1 + 5
        while True:
            cb.request("GET", "/v1/kv/bench/lag?replica")
            r = cb.getresponse()
            seen = json.loads(r.read())
            if r.status == 200 and seen["revision"] >= revision:
                break
            if time.perf_counter() > deadline:
                sys.exit(f"write {i} (revision {revision}) not on B after 5 s")
        t2 = time.perf_counter()
        write_ms.append((t1 - t0) * 1e3)
        lags.append((t2 - t1) * 1e3)
    q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]
    print(f"{writes} writes through A, read back from B's replica")
    print(f"write (A's admin API -> JetStream ack): p50 {q(write_ms, .5):.2f} ms, p99 {q(write_ms, .99):.2f} ms")
    print(f"B's replica behind A's acknowledged write: p50 {q(lags, .5):.2f} ms, p99 {q(lags, .99):.2f} ms, max {max(lags):.2f} ms")


main()
