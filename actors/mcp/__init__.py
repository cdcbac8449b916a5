"""MCP, both ways (the optional extra ``mcp``): MCP servers' tools as Troupe tools
(:class:`McpServer`), and Troupe's performers served as an MCP server
(``troupe mcp MODULE:ATTR``, :func:`mcp_server`).

Importing this needs ``pip install 'trio-troupe[mcp]'``.
"""

from .._extras import require_extra

require_extra("mcp", "mcp", "actors.mcp")

from ._client import DEFAULT_CONNECT_TIMEOUT as DEFAULT_CONNECT_TIMEOUT
from ._client import PROGRESS_EVENT as PROGRESS_EVENT
from ._client import McpConnectionError as McpConnectionError
from ._client import McpServer as McpServer
from ._client import McpToolError as McpToolError
from ._serve import main as main
from ._serve import mcp_server as mcp_server
from ._serve import serve_http as serve_http
from ._serve import serve_stdio as serve_stdio

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "PROGRESS_EVENT",
    "McpConnectionError",
    "McpServer",
    "McpToolError",
    "main",
    "mcp_server",
    "serve_http",
    "serve_stdio",
]
