"""The HTTP edge (the optional extra ``serve``): performers served over server-sent
events in LangChain's event shape, AG-UI's, or the Vercel AI SDK's UI message stream.

``troupe serve MODULE:ATTR`` serves from the command line; :func:`asgi_app` is the same
app, to mount in your own. Importing this needs ``pip install 'trio-troupe[serve]'``.
"""

from .._targets import input_schema as input_schema
from ._app import DEFAULT_HEARTBEAT as DEFAULT_HEARTBEAT
from ._app import asgi_app as asgi_app
from ._auth import ANYONE as ANYONE
from ._auth import AuthHook as AuthHook
from ._auth import Identity as Identity
from ._server import load_target as load_target
from ._server import serve as serve
from ._wire import PROTOCOLS as PROTOCOLS

__all__ = [
    "ANYONE",
    "AuthHook",
    "Identity",
    "DEFAULT_HEARTBEAT",
    "PROTOCOLS",
    "asgi_app",
    "input_schema",
    "load_target",
    "serve",
]
