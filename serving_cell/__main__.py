"""``python -m serving_cell --model-dir DIR --port P``: run one cell in this process."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn

from serving_cell.app import create_app
from serving_cell.fetch import FetchError, fetch_model
from serving_cell.settings import METADATA_ENV, CellSettings, MetadataError, read_metadata


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving_cell", description="Serve one model folder over HTTP."
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="the deployment's folder with the scoring script or MLmodel (or --fetch-url)",
    )
    fetch = parser.add_argument_group(
        "fetching", "the files from the control plane instead of --model-dir (Swarm cells)"
    )
    fetch.add_argument("--fetch-url", default=None, help="the deployment's archive URL")
    fetch.add_argument("--fetch-sha256", default=None, help="the archive's expected sha256")
    fetch.add_argument(
        "--fetch-token-file", type=Path, default=None, help="file holding the cell credential"
    )
    fetch.add_argument(
        "--cache-dir", type=Path, default=None, help="where fetched files are kept on this node"
    )
    fetch.add_argument(
        "--fetch-patience",
        type=float,
        default=60.0,
        help="seconds to keep trying while the control plane cannot be reached",
    )
    parser.add_argument(
        "--no-new-privileges",
        action="store_true",
        help="set no_new_privs on this process first: nothing it runs can gain privileges",
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="also serve the Open Inference Protocol over gRPC on this port (default: off)",
    )
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


def no_new_privileges() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS): kept by every child, cannot be undone. For engines that
    cannot set it on the container (Swarm services before Docker 25)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # 38: PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def main(argv: list[str] | None = None) -> int:
    """Run the cell until SIGINT/SIGTERM; returns (2) only when the arguments are wrong."""
    args = parse_args(argv)
    if args.no_new_privileges:
        no_new_privileges()
    if args.fetch_url:
        if not (args.fetch_sha256 and args.fetch_token_file and args.cache_dir):
            print(
                "error: --fetch-url needs --fetch-sha256, --fetch-token-file and --cache-dir",
                file=sys.stderr,
            )
            return 2
        try:
            args.model_dir = fetch_model(
                args.fetch_url,
                args.fetch_sha256,
                args.fetch_token_file,
                args.cache_dir,
                patience=args.fetch_patience,
            )
        except FetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.model_dir is None or not args.model_dir.is_dir():
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
    grpc_host = f"[{args.host}]" if ":" in args.host else args.host
    settings = CellSettings(
        model_dir=model_dir,
        metadata=metadata,
        entrypoint=args.entrypoint,
        grpc_address=None if args.grpc_port is None else f"{grpc_host}:{args.grpc_port}",
    )
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
