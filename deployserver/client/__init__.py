"""The Python SDK: DeployClient, its errors and packing (imports no server code).

``from deployserver.client import DeployClient, NotFound`` is the public way in.
"""

from deployserver.client.sdk import *  # noqa: F403 - the SDK's public names, as listed there
from deployserver.client.sdk import __all__ as __all__
