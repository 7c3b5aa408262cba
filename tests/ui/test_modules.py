"""The UI's own modules, run in Chromium against their Python counterparts: the
.deployignore matcher against pathspec (what `deployserver push` uses), the metadata
check against the server's pydantic model, the Prometheus reader against the server's
own /metrics text, and the server-sent-events splitter against the SDK's."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pathspec
import pytest
from pydantic import ValidationError

from deployserver.client.sse import messages
from deployserver.upload.metadata import DeploymentMetadata
from tests.ui.conftest import UIServer

pytestmark = pytest.mark.slow


def module(page: Any, server: UIServer, name: str) -> str:
    """The URL of one of the UI's modules, at the version the server serves now."""
    shell = httpx.get(f"{server.url}/ui").text
    found = re.search(r"(/ui/static/[0-9a-f]+/)app\.js", shell)
    assert found
    page.goto("/ui/signin")
    return found.group(1) + name


IGNORE_CASES = [
    (["*.log", "!keep.log"], ["a.log", "keep.log", "sub/b.log", "sub/keep.log", "x.py"]),
    (["data/"], ["data/x.bin", "data", "src/data/y", "database.py"]),
    (["/build"], ["build/out.o", "src/build/out.o", "build"]),
    (["**/cache/**"], ["cache/a", "x/cache/b/c", "cachex/a"]),
    (["a/**/b"], ["a/b", "a/x/b", "a/x/y/b", "b"]),
    (["*.py[co]", "test_?.py"], ["m.pyc", "m.pyo", "m.py", "test_a.py", "test_ab.py"]),
    (["weights/*", "!weights/keep.bin"], ["weights/a.bin", "weights/keep.bin", "weights/s/x"]),
    (["# a comment", "", "  ", "notes.txt"], ["notes.txt", "d/notes.txt", "# a comment"]),
    (["docs", "!docs/keep.md"], ["docs/a.md", "docs/keep.md"]),
]


def test_the_ignore_matcher_agrees_with_pathspec(page: Any, ui_server: UIServer) -> None:
    url = module(page, ui_server, "ignore.js")
    for lines, paths in IGNORE_CASES:
        spec = pathspec.GitIgnoreSpec.from_lines(lines)
        expected = [spec.match_file(p) for p in paths]
        got = page.evaluate(
            """async ([url, lines, paths]) => {
                const m = await import(url);
                const rules = m.compile(lines);
                return paths.map((p) => m.matches(rules, p));
            }""",
            [url, lines, paths],
        )
        assert got == expected, (lines, list(zip(paths, got, expected, strict=True)))
    sent = page.evaluate(
        """async (url) => {
            const m = await import(url);
            const files = ["metadata.json", ".deployignore", "score.py", ".git/HEAD",
              "pkg/__pycache__/m.pyc", "sub/metadata.json", "data/big.bin"].map((path) => ({path}));
            const {kept} = m.select(files, {}, "data/\\n");
            const only = m.select(files, {files: ["*.py"]}, "").kept;
            return [kept.map((f) => f.path), only.map((f) => f.path)];
        }""",
        url,
    )
    assert sent == [["score.py", "sub/metadata.json"], ["score.py"]]


META_CASES: list[Any] = [
    {"model": "iris"},
    {"model": "Iris"},
    {"model": ""},
    {},
    {"model": "iris", "description": "x" * 10_001},
    {"model": "iris", "resources": {"cpus": 0}},
    {"model": "iris", "resources": {"cpus": 2.5, "memory": "2g"}},
    {"model": "iris", "resources": {"gpus": 1}},
    {"model": "iris", "env": {"OK_NAME": "v", "BAD-NAME": "v"}},
    {"model": "iris", "env": {"A": 1}},
    {"model": "iris", "labels": {"team": "ml"}},
    {"model": "iris", "parameters": []},
    {"model": "iris", "public": [1]},  # (pydantic would coerce "yes": the form sends booleans)
    {"model": "iris", "input_spec": [{"name": "x", "data_type": "double"}]},
    {"model": "iris", "input_spec": [{"name": "x", "data_type": "float"}]},
    {"model": "iris", "network": {"egress": True}},
    {"model": "iris", "requirements": ["numpy"] * 501},
    {"model": "iris", "entrypoint": "pkg/score.py:Model", "extra_field": {"kept": True}},
]


def test_the_metadata_check_agrees_with_the_server(page: Any, ui_server: UIServer) -> None:
    url = module(page, ui_server, "validate.js")
    schema = DeploymentMetadata.model_json_schema()
    got = page.evaluate(
        """async ([url, schema, cases]) => {
            const m = await import(url);
            return cases.map((c) => m.validate(schema, c).map((e) => e.path.join(".")));
        }""",
        [url, schema, META_CASES],
    )
    for case, errors in zip(META_CASES, got, strict=True):
        try:
            DeploymentMetadata.model_validate(case)
            server_errors: list[str] = []
        except ValidationError as exc:
            server_errors = [".".join(str(p) for p in e["loc"]) for e in exc.errors()]
        assert bool(errors) == bool(server_errors), (case, errors, server_errors)
        # the same field is named (pydantic adds the branch of a union to its path)
        for where in server_errors:
            head = where.split(".")[0]
            assert any(e.split(".")[0] == head for e in errors), (case, errors, server_errors)


def test_the_metrics_reader_reads_the_servers_own_text(page: Any, ui_server: UIServer) -> None:
    url = module(page, ui_server, "metrics.js")
    text = """# HELP deployserver_serve_requests_total Requests
deployserver_serve_requests_total{model="a",status="200"} 8.0
deployserver_serve_requests_total{model="a",status="503"} 2.0
deployserver_serve_latency_seconds_bucket{le="0.01",model="a"} 5.0
deployserver_serve_latency_seconds_bucket{le="0.1",model="a"} 10.0
deployserver_serve_latency_seconds_bucket{le="+Inf",model="a"} 10.0
deployserver_serve_latency_seconds_sum{model="a"} 0.3
deployserver_serve_latency_seconds_count{model="a"} 10.0
"""
    got = page.evaluate(
        "async ([url, text]) => Object.fromEntries((await import(url)).serveFigures(text))",
        [url, text],
    )
    a = got["a"]
    assert (a["requests"], a["errors"]) == (10, 2)
    assert a["meanSeconds"] == pytest.approx(0.03)
    assert a["p95Seconds"] == pytest.approx(0.01 + 0.09 * 0.9)
    # and the server's real text parses, with every model's requests counted
    real = ui_server.api.get("/metrics").text
    counted = page.evaluate(
        "async ([url, text]) => [...(await import(url)).serveFigures(text).keys()]", [url, real]
    )
    assert set(counted) == set(re.findall(r'serve_requests_total\{model="([^"]+)"', real))


def test_the_event_splitter_agrees_with_the_sdks(page: Any, ui_server: UIServer) -> None:
    url = module(page, ui_server, "api.js")
    stream = (
        'retry: 2000\n\n: keep-alive\n\nid: 7\ndata: {"a":1}\n\n'
        'event: end\ndata: {"message": "bye"}\n\ndata: line one\ndata: line two\n\n'
    )
    chunks = [stream[i : i + 5] for i in range(0, len(stream), 5)]  # split anywhere
    got = page.evaluate(
        """async ([url, chunks]) => {
            const out = [];
            const feed = (await import(url)).sseParser((m) => out.push([m.event, m.data, m.id]));
            chunks.forEach(feed);
            return out;
        }""",
        [url, chunks],
    )
    expected = [[m.event, m.data, m.id] for m in messages(stream.splitlines())]
    assert got == expected
