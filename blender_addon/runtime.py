"""The add-on's process-wide state: the one job manager and the local engine host. No bpy.

Blender does not unregister add-ons on quit, so the local engine is also
stopped at interpreter exit.
"""

from __future__ import annotations

import atexit

from .client.host import EngineHost
from .client.jobs import JobManager

manager = JobManager()
host = EngineHost()


def shutdown() -> None:
    """Cancel the running job and stop the local engine (unregister and exit)."""
    manager.cancel()
    host.stop()


atexit.register(host.stop)
