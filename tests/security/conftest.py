"""The lifecycle rig (one test on fake, process and docker runtimes) for attacks that need
a real cell."""

from tests.lifecycle.conftest import lifecycle_settings, rig, runtime_kind  # noqa: F401
