"""An exception type only the Ray tests' hosts import (the driver never does)."""


class HostOnlyError(Exception):
    """Raised on a host; the driver sees it as a RemoteRunError naming this type."""
