"""Run pip with every way of building from source removed; run as a script, never imported.

``--only-binary=:all:`` does not cover direct references (``name @ file:///x.tar.gz`` in a
wheel's ``Requires-Dist``): pip would build that sdist, running its code. Here the two
places where pip runs a package's build code are replaced before pip starts: preparing a
source distribution's metadata, and calling a build backend hook. If either is missing
(a pip whose internals moved), nothing runs at all: it fails closed.

Usage: ``python -I pipguard.py <pip arguments>`` (only the standard library and pip).
"""

import sys

REFUSED_EXIT = 3
REFUSAL = "refusing to build {what} from source on the server's host: only wheels are installed"


def install_guard() -> None:
    """Replace pip's source-build entry points; exit when they cannot be found."""
    try:
        from pip._internal.distributions.sdist import SourceDistribution
        from pip._internal.exceptions import InstallationError
        from pip._vendor.pyproject_hooks._impl import BuildBackendHookCaller
    except ImportError as exc:
        print(f"deployserver: pip's build entry points are not where expected: {exc}")
        sys.exit(REFUSED_EXIT)
    for owner, name in (
        (SourceDistribution, "prepare_distribution_metadata"),
        (BuildBackendHookCaller, "_call_hook"),
    ):
        if not callable(getattr(owner, name, None)):
            print(f"deployserver: pip has no {owner.__name__}.{name}; refusing to run it")
            sys.exit(REFUSED_EXIT)

    def prepare_distribution_metadata(self, *_a, **_k):  # type: ignore[no-untyped-def]
        raise InstallationError(REFUSAL.format(what=self.req.link or self.req.name))

    def call_hook(self, hook_name, _kwargs):  # type: ignore[no-untyped-def]
        raise InstallationError(REFUSAL.format(what=f"{self.source_dir} ({hook_name})"))

    # replacing pip's own methods is the whole point of this guard
    SourceDistribution.prepare_distribution_metadata = prepare_distribution_metadata  # type: ignore[method-assign]
    BuildBackendHookCaller._call_hook = call_hook  # type: ignore[method-assign]


def main() -> None:
    install_guard()
    from pip._internal.cli.main import main as pip_main

    sys.exit(pip_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
