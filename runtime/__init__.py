"""Troupe's machinery: actors and mailboxes, the supervisor, run context, the tracer,
subscriber fan-out and the public streams. It knows nothing of LLMs or agents."""

from ._shadow import refuse_shadowed as refuse_shadowed

refuse_shadowed(("protocol",), also=("actors",))

from ._api import DEFAULT_STREAM_CAPACITY as DEFAULT_STREAM_CAPACITY
from ._api import ChunkStream as ChunkStream
from ._api import EventStream as EventStream
from ._api import RunLogStream as RunLogStream
from ._api import Runtime as Runtime
from ._api import WatchStream as WatchStream
from ._api import current_runtime as current_runtime
from ._api import invoke as invoke
from ._api import open_runtime as open_runtime
from ._api import stream as stream
from ._api import stream_events as stream_events
from ._api import stream_log as stream_log
from ._checks import positive_int as positive_int
from ._checks import running_loop as running_loop
from ._checks import seconds as seconds
from ._context import Resume as Resume
from ._context import RunConfig as RunConfig
from ._context import RunContext as RunContext
from ._context import add_root_metadata_hook as add_root_metadata_hook
from ._context import check_thread_id as check_thread_id
from ._context import current_run as current_run
from ._context import make_config as make_config
from ._core import SCHEDULE_EVERY as SCHEDULE_EVERY
from ._core import Run as Run
from ._custom_events import CustomEventDispatch as CustomEventDispatch
from ._custom_events import adispatch_custom_event as adispatch_custom_event
from ._custom_events import dispatch_custom_event as dispatch_custom_event
from ._errors import ActorCrash as ActorCrash
from ._errors import ActorCrashedError as ActorCrashedError
from ._errors import ActorFailedError as ActorFailedError
from ._errors import JournaledError as JournaledError
from ._errors import NoRuntimeError as NoRuntimeError
from ._errors import NoStoreError as NoStoreError
from ._errors import PerformerError as PerformerError
from ._errors import ReplayDivergenceError as ReplayDivergenceError
from ._errors import RunCancelledError as RunCancelledError
from ._errors import RunNotPausedError as RunNotPausedError
from ._errors import RunPaused as RunPaused
from ._errors import RuntimeClosedError as RuntimeClosedError
from ._errors import RunTimeoutError as RunTimeoutError
from ._errors import StreamUsageError as StreamUsageError
from ._errors import TroupeError as TroupeError
from ._errors import WrongEventLoopError as WrongEventLoopError
from ._errors import describe_error as describe_error
from ._errors import is_exit as is_exit
from ._filters import EventFilter as EventFilter
from ._hosted import HostedChunkStream as HostedChunkStream
from ._hosted import HostedStream as HostedStream
from ._hosted import RunFeed as RunFeed
from ._hosted import RunReader as RunReader
from ._hosted import RunSource as RunSource
from ._ids import new_run_id as new_run_id
from ._interrupt import interrupt as interrupt
from ._journal import JournalError as JournalError
from ._journal import UnknownRunError as UnknownRunError
from ._open_store import open_store as open_store
from ._options import EventStreamOptions as EventStreamOptions
from ._options import LogOptions as LogOptions
from ._options import RunOptions as RunOptions
from ._options import StreamOptions as StreamOptions
from ._options import WatchOptions as WatchOptions
from ._performer import Configured as Configured
from ._performer import Performer as Performer
from ._performer import Runnable as Runnable
from ._run_log import RunLog as RunLog
from ._run_log import RunLogBuilder as RunLogBuilder
from ._run_log import RunLogPatch as RunLogPatch
from ._shared_state import SharedState as SharedState
from ._shared_state import current_state as current_state
from ._state import StateError as StateError
from ._store import FencedError as FencedError
from ._store import RunRecord as RunRecord
from ._store import RunState as RunState
from ._store import Store as Store
from ._store import StoreError as StoreError
from ._store import ThreadRecord as ThreadRecord
from ._stored import JoinedStream as JoinedStream
from ._stored import ThreadHistory as ThreadHistory
from ._stored import Threads as Threads
from ._stored import UnknownThreadError as UnknownThreadError
from ._subscribers import Attachment as Attachment
from ._subscribers import EventSubscriber as EventSubscriber
from ._subscribers import HandlerError as HandlerError

__all__ = [
    # running
    "Runtime",
    "current_runtime",
    "open_runtime",
    # performers and runs
    "Configured",
    "Performer",
    "Run",
    "Resume",
    "RunConfig",
    "interrupt",
    "RunContext",
    "Runnable",
    "add_root_metadata_hook",
    "check_thread_id",
    "current_run",
    "make_config",
    # shared state
    "SharedState",
    "StateError",
    "current_state",
    "new_run_id",
    # streams
    "DEFAULT_STREAM_CAPACITY",
    "SCHEDULE_EVERY",
    "ChunkStream",
    "EventFilter",
    "EventStream",
    "WatchStream",
    "HostedStream",
    "HostedChunkStream",
    "RunFeed",
    "RunReader",
    "RunSource",
    "EventStreamOptions",
    "LogOptions",
    "RunOptions",
    "StreamOptions",
    "WatchOptions",
    "CustomEventDispatch",
    "adispatch_custom_event",
    "dispatch_custom_event",
    "invoke",
    "stream",
    "stream_events",
    # run log
    "RunLog",
    "RunLogBuilder",
    "RunLogPatch",
    "RunLogStream",
    "stream_log",
    # the journal: stores, threads, runs read back
    "FencedError",
    "JoinedStream",
    "JournalError",
    "NoStoreError",
    "RunRecord",
    "RunState",
    "Store",
    "StoreError",
    "ThreadHistory",
    "ThreadRecord",
    "Threads",
    "UnknownRunError",
    "UnknownThreadError",
    "open_store",
    # subscribers
    "Attachment",
    "EventSubscriber",
    "HandlerError",
    # errors
    "ActorCrash",
    "ActorCrashedError",
    "ActorFailedError",
    "JournaledError",
    "NoRuntimeError",
    "ReplayDivergenceError",
    "RunNotPausedError",
    "RunPaused",
    "PerformerError",
    "RunCancelledError",
    "RunTimeoutError",
    "RuntimeClosedError",
    "StreamUsageError",
    "TroupeError",
    "WrongEventLoopError",
    "describe_error",
    "is_exit",
    # for Troupe's own packages: a user's runtime.py or protocol.py hiding them, and
    # the one check of a positive integer setting
    "refuse_shadowed",
    "positive_int",
    "seconds",
    "running_loop",
]
