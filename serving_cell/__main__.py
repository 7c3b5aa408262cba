"""``python -m serving_cell --model-dir DIR --port P``: run one cell in this process."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn

from serving_cell.app import create_app
from serving_cell.settings import METADATA_ENV, CellSettings, MetadataError, read_metadata


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving_cell", description="Serve one model folder over HTTP."
    )
    parser.add_argument(
        "--model-dir",
        required=True,
        type=Path,
        help="the deployment's folder with the scoring script or MLmodel",
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--host",
        default="0.0.0.0",
        help="address to listen on (default 0.0.0.0, as inside a container)",
    )
    parser.add_argument(
        "--entrypoint",
        default=None,
        help="'path/to/file.py:ClassName'; overrides metadata and detection",
    )
    parser.add_argument(
        "--metadata",
        default=None,
        type=Path,
        help=f"JSON file with the deployment metadata; wins over ${METADATA_ENV}",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the cell until SIGINT/SIGTERM; returns (2) only when the arguments are wrong."""
    args = parse_args(argv)
    if not args.model_dir.is_dir():
        print(f"error: --model-dir {args.model_dir} is not a folder", file=sys.stderr)
        return 2
    try:
        metadata = read_metadata(args.metadata, os.environ)
    except (MetadataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model_dir = args.model_dir.resolve()
    # Scripts open files relative to their folder and read the deployment's env; the
    # control plane sets env on the container too, and what it set there wins.
    for key, value in (metadata.get("env") or {}).items():
        os.environ.setdefault(str(key), str(value))
    os.chdir(model_dir)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    settings = CellSettings(model_dir=model_dir, metadata=metadata, entrypoint=args.entrypoint)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    # The server has shut down. A load() or predict still running in a worker thread
    # (not a daemon thread) would otherwise hold the process until it finished, so a
    # cell stopped while loading a large model would ignore SIGTERM: leave now.
    # (Recent uvicorn re-raises the captured signal itself and never gets here.)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
