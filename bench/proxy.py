"""3. proxy: /serve/{model}/predict against the cell's own port, on a no-op model.

1 KB of JSON per request; throughput at 32 concurrent (goal >= 0.9) and the median
latency at 1 concurrent (goal <= 1.5x), subject and baseline interleaved. The load comes
from a separate process (wrk where installed; see ``bench.load``). Until the /serve
route exists (404 on a ready model) both figures say "not available yet".
"""

from __future__ import annotations

from bench import load
from bench.common import (
    BODY_1KB,
    JSON,
    Figure,
    Options,
    interleave,
    median,
    missing_routes,
    pending,
    profiled,
    ready_noop,
    server,
)

NAME = "proxy"
MODEL = "bench-noop"
THROUGHPUT = "proxy: /serve throughput / direct throughput, 32 concurrent"
LATENCY = "proxy: /serve p50 / direct p50, 1 concurrent"


def run(opts: Options) -> list[Figure]:
    with server(opts) as srv:
        record = ready_noop(srv, MODEL)
        via = f"/serve/{MODEL}/predict"
        if missing_routes(srv, via):
            return [pending(THROUGHPUT, ">= 0.9"), pending(LATENCY, "<= 1.5")]
        direct = load.Target(f"{record['cell']['url']}/predict", "POST", BODY_1KB, JSON)
        proxied = load.Target(
            srv.url + via, "POST", BODY_1KB, {**JSON, "Authorization": f"Bearer {srv.token}"}
        )
        runs: list[load.LoadStats] = []

        def measure(target: load.Target, connections: int) -> load.LoadStats:
            runs.append(load.run(target, connections=connections, duration=opts.duration))
            return runs[-1]

        with profiled(opts, NAME, srv.pid, NAME):
            d32, v32 = interleave(
                opts.repeats,
                lambda: measure(direct, 32).rps,
                lambda: measure(proxied, 32).rps,
            )
            d1, v1 = interleave(
                opts.repeats,
                lambda: measure(direct, 1).p50_ms,
                lambda: measure(proxied, 1).p50_ms,
            )
    client = f"load from {runs[0].client}, {opts.duration:g} s runs"
    return [
        Figure(
            THROUGHPUT,
            ">= 0.9",
            median(v32) / median(d32),
            f"{median(v32):.0f} req/s",
            f"{median(d32):.0f} req/s",
            client,
        ),
        Figure(
            LATENCY,
            "<= 1.5",
            median(v1) / median(d1),
            f"{median(v1):.2f} ms",
            f"{median(d1):.2f} ms",
            client,
        ),
    ]
