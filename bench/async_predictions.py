"""5. async: predictions through the queue against the same through /serve, no-op model.

End-to-end requests/s: ``POST /api/v1/models/{model}/predictions``, then the long poll
``GET /api/v1/predictions/{id}?wait=30`` (answered the moment it is done), against
``POST /serve/{model}/predict``; both driven by the same Python generator in its own
process (the flow needs one), 8 at once. Until both routes exist (404 on a ready model)
the figure says "not available yet".
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

NAME = "async"
MODEL = "bench-noop"
CONCURRENCY = 8
FIGURE = f"async: async predictions/s / sync /serve predictions/s, {CONCURRENCY} at once"


def run(opts: Options) -> list[Figure]:
    with server(opts) as srv:
        ready_noop(srv, MODEL)
        submit = f"/api/v1/models/{MODEL}/predictions"
        via = f"/serve/{MODEL}/predict"
        if missing_routes(srv, submit, via):
            return [pending(FIGURE, ">= 0.5")]
        headers = {**JSON, "Authorization": f"Bearer {srv.token}"}
        queued = load.Target(
            srv.url + submit,
            "POST",
            BODY_1KB,
            headers,
            poll=f"{srv.url}/api/v1/predictions/{{id}}?wait=30",
        )
        direct = load.Target(srv.url + via, "POST", BODY_1KB, headers, python=True)
        with profiled(opts, NAME, srv.pid, NAME):
            sync_rps, async_rps = interleave(
                opts.repeats,
                lambda: load.run(direct, connections=CONCURRENCY, duration=opts.duration).rps,
                lambda: load.run(queued, connections=CONCURRENCY, duration=opts.duration).rps,
            )
    return [
        Figure(
            FIGURE,
            ">= 0.5",
            median(async_rps) / median(sync_rps),
            f"{median(async_rps):.0f} req/s",
            f"{median(sync_rps):.0f} req/s",
            f"Python load generator, {opts.duration:g} s runs, a long poll per prediction",
        )
    ]
