"""Troupe on a Ray cluster: hosts run the registry's performers; a trio driver reads the
events, with credit windows, cancellation, and the death of either side.

Marked ``ray``: ``.ci/run`` runs these as a step of their own on a local Ray cluster,
with ``TROUPE_RAY_REQUIRED=1``. Elsewhere, where Ray is not installed, they skip, saying
what to install; in that step they fail instead.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import testing
from actors.testing import check_events
from protocol import SerializationError, StateDelta, StreamEvent, converter, error_type_name
from runtime import JournaledError, RunCancelledError, RuntimeClosedError, open_runtime

from .extras import needs_extra
from .ray_performers import OddError, performers

pytestmark = pytest.mark.ray

REGISTRY = "tests.ray_performers:performers"
ROOT = Path(__file__).resolve().parent.parent

with needs_extra("ray", "TROUPE_RAY_REQUIRED"):
    import ray

    from actors.ray import HostDiedError, RemoteRunError, open_ray_runtime
    from actors.ray._driver import ray_result


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    """One local cluster for the module (it starts in a few seconds)."""
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def shared_hosts(**options: Any) -> Any:
    """The module's named host (started once, reused by every test that does not kill
    its hosts)."""
    return open_ray_runtime(registry=REGISTRY, names=["troupe-test-host"], **options)


def normalised(events: Sequence[StreamEvent]) -> list[dict[str, Any]]:
    """Events as JSON with run ids (also inside message ids) replaced by their order of
    appearance, and no times."""
    out = []
    for event in events:
        data = converter.unstructure(event, StreamEvent)
        data["start_time"] = data["end_time"] = None
        out.append(data)
    return renamed(out)


def renamed(dicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Event dicts with run ids (also inside message ids) replaced by their order of
    appearance."""
    ids: dict[str, str] = {}
    for data in dicts:
        ids.setdefault(data["run_id"], f"run{len(ids)}")
    text = json.dumps(dicts)
    for run_id, name in ids.items():
        text = text.replace(run_id, name)
    normal: list[dict[str, Any]] = json.loads(text)
    return normal


async def test_remote_events_are_the_local_events_of_the_same_script() -> None:
    local_cat = performers()["cat"]
    async with open_runtime() as rt, rt.astream_events(local_cat, "where is the cat?") as stream:
        local = [event async for event in stream]
    async with shared_hosts() as remote_rt:
        async with remote_rt.astream_events("cat", "where is the cat?") as stream:
            remote = [event async for event in stream]
        # A performer of the registry, as loaded here, names the same run.
        async with remote_rt.astream_events(remote_rt.performers["cat"], "where is the cat?") as s:
            again = [event async for event in s]
    check_events(remote)
    assert normalised(remote) == normalised(local)
    answer: Any = local[-1].data.output
    assert remote[-1].data.output.output == answer.output
    assert normalised(again) == normalised(local)
    assert any(e.event == "on_chat_model_stream" and e.run.name == "Get Items LLM" for e in remote)


async def test_steps_and_the_run_log_read_as_they_do_in_process() -> None:
    local_cat = performers()["cat"]
    question = "where is the cat?"
    async with open_runtime() as rt:
        async with rt.astream(local_cat, question) as steps:
            local_steps = [step async for step in steps]
        async with rt.astream_log(local_cat, question, diff=False) as log:
            local_log: list[Any] = [state async for state in log]
    local_state = local_log[-1].state
    async with shared_hosts() as remote_rt:
        async with remote_rt.astream("cat", question) as steps:
            remote_steps = [step async for step in steps]
        async with remote_rt.astream_log("cat", question, diff=False) as log:
            remote_log: list[Any] = [state async for state in log]
        remote_state = remote_log[-1].state
        async with remote_rt.astream_log("cat", question, include_types=["tool"]) as patches:
            ops = [op async for patch in patches for op in patch.ops]
        with pytest.raises(TypeError, match="no event filters"):
            remote_rt.astream("cat", question, include_types=["tool"])
    assert [type(s).__name__ for s in remote_steps] == [type(s).__name__ for s in local_steps]
    assert remote_steps[-1].output == local_steps[-1].output
    assert remote_state["final_output"]["output"] == local_state["final_output"]["output"]
    assert set(remote_state["final_output"]) == set(local_state["final_output"])
    assert [v["name"] for v in remote_state["logs"].values()] == [
        v["name"] for v in local_state["logs"].values()
    ]
    logged = {op["path"].split("/")[2] for op in ops if op["path"].startswith("/logs/")}
    assert logged == {"where_cat_is_hiding", "get_items"}


async def test_a_watcher_sees_every_run_this_driver_starts() -> None:
    from actors.testing import EventCollector

    class Failing:
        async def on_event(self, event: StreamEvent) -> None:
            raise RuntimeError("a watcher's bug")

    collector = EventCollector()
    async with shared_hosts() as rt:
        with pytest.raises(ValueError, match="drop_oldest=True"):
            await rt.subscribe(collector)
        with pytest.raises(TypeError, match="on_event"):
            await rt.subscribe(object(), drop_oldest=True)
        attachment = await rt.subscribe(collector, Failing(), drop_oldest=True)
        ids = []
        for question in ("a b", "c d e"):
            async with rt.astream_events("step", question) as stream:
                ids.append(stream.run_id)
                async for _ in stream:
                    pass
        await collector.wait_for_runs(2)
        trees = [collector.of_tree(run_id) for run_id in ids]
    # Closing let the watchers finish: the failing one's errors were noted, harmed nothing.
    assert len(attachment.errors) == len(trees[0]) + len(trees[1])
    assert [len(tree) for tree in trees] == [4, 5]
    for tree in trees:
        check_events(tree)


async def test_config_and_filters_apply_on_the_host() -> None:
    async with shared_hosts() as rt:
        async with rt.astream_events(
            "cat",
            "where is the cat?",
            {"tags": ["remote"], "metadata": {"user": {"id": 7}}},
            run_name="Cat",
            include_types=["chat_model"],
            run_id="0192f000-0000-7000-8000-00000000c0de",
        ) as stream:
            events = [event async for event in stream]
        assert stream.run_id == "0192f000-0000-7000-8000-00000000c0de"
    assert events and {e.run.kind for e in events} == {"chat_model"}
    assert all("remote" in e.run.tags and e.run.metadata["user"] == {"id": 7} for e in events)
    assert all(e.run.parent_ids[0] == stream.run_id for e in events)
    check_events(events, filtered=True)


async def test_the_shared_state_travels_to_the_host_and_its_changes_come_back() -> None:
    async with (
        shared_hosts() as rt,
        rt.astream_events("shop", "add milk", state={"items": ["tea"]}) as stream,
    ):
        events = [event async for event in stream]
    check_events(events)
    changes = [e.data.chunk for e in events if e.event == "on_custom_event"]
    assert changes == [StateDelta([{"op": "add", "path": "/items/-", "value": "milk"}])]
    ends = [e.data.output for e in events if e.event == "on_tool_end"]
    assert ends == ["2 items"]  # the tool read the state the driver gave


async def test_ainvoke_returns_the_output_and_raises_the_runs_exception() -> None:
    async with shared_hosts() as rt:
        assert await rt.ainvoke("step", "a b") == "a b"
        with pytest.raises(ValueError, match="boom"):
            await rt.ainvoke("fails", "a b")


async def test_a_failing_run_ends_with_its_error_event_then_raises_the_same_type() -> None:
    async with shared_hosts() as rt:
        events: list[StreamEvent] = []
        with pytest.raises(KeyError) as caught:
            async with rt.astream_events("raises", "missing") as stream:
                async for event in stream:  # kept one by one: the loop ends by raising
                    events.append(event)  # noqa: PERF401
        assert caught.value.args == ("missing",)
        assert events[-1].status == "error" and events[-1].data.error == "KeyError: 'missing'"
        check_events(events)

        with pytest.raises(OddError):  # its __str__ fails, here as on the host
            await rt.ainvoke("raises", "odd")
        with pytest.raises(RemoteRunError, match="HostOnlyError: only the host knows me") as odd:
            await rt.ainvoke("raises", "host-only")
        assert odd.value.type_name == "tests.ray_host_only.HostOnlyError"
        # A tool's SystemExit ends its run, not the host; the driver is not made to exit.
        with pytest.raises(RemoteRunError, match=r"builtins\.SystemExit: 3"):
            await rt.ainvoke("raises", "exit")
        assert await rt.ainvoke("step", "still fine") == "still fine"


@pytest.mark.parametrize(
    ("settings", "error", "named"),
    [
        ({"lease": 0}, ValueError, "lease"),
        ({"lease": "5"}, TypeError, "lease"),
        ({"start_timeout": float("nan")}, ValueError, "start_timeout"),
    ],
)
async def test_bad_seconds_are_refused_before_ray_starts(
    settings: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        async with open_ray_runtime(**settings):
            pass


async def test_bad_requests_get_clear_errors_and_start_nothing() -> None:
    async with shared_hosts() as rt:
        with pytest.raises(LookupError, match="no performer named 'nobody'"):
            rt.astream_events("nobody", "x")
        with pytest.raises(LookupError, match="not one of the registry's performers"):
            rt.astream_events(performers()["step"], "x")
        with pytest.raises(TypeError, match="callbacks cannot travel"):
            rt.astream_events("step", "x", callbacks=[object()])
        with pytest.raises(TypeError, match="unknown options"):
            rt.astream_events("step", "x", colour="red")
        with pytest.raises(ValueError, match="window must be a positive integer"):
            rt.astream_events("step", "x", window=0)
        with pytest.raises(TypeError, match="include_names"):
            rt.astream_events("step", "x", include_names="step")
        with pytest.raises(SerializationError, match=r"cannot serialize a builtins\.set"):
            rt.astream_events("step", {"x": {1, 2}})
        with pytest.raises(SerializationError, match="cannot serialize"):
            rt.astream_events("step", "x", metadata={"when": object()})
        with pytest.raises(TypeError, match="step takes a string"):  # coerced on the host
            async with rt.astream_events("step", 42):
                pass
        in_use = "0192f000-0000-7000-8000-0000000000aa"
        async with rt.astream_events("forever", "x", run_id=in_use) as first:
            with pytest.raises(ValueError, match="in use"):
                async with rt.astream_events("forever", "x", run_id=in_use):
                    pass
            first.cancel()
            with pytest.raises(RunCancelledError):
                async for _ in first:
                    pass
        assert rt.open_runs == 0
        assert (await _status(rt))["runs"] == 0
    with pytest.raises(ValueError, match="cannot import"):
        async with open_ray_runtime(registry="no_such_module:performers"):
            pass
    with pytest.raises(HostDiedError, match="1 of 1 hosts did not start within 2 s"):
        async with open_ray_runtime(
            registry=REGISTRY, host_options={"num_cpus": 1000}, start_timeout=2
        ):
            pass
    for bad in ({"lease": 0}, {"start_timeout": float("nan")}, {"window": True}, {"hosts": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            async with open_ray_runtime(registry=REGISTRY, **bad):
                pass
    with pytest.raises(HostDiedError, match="this host has no performers for you"):
        async with open_ray_runtime(
            registry="tests.ray_performers:fails_on_hosts", host_options={"num_cpus": 0}
        ):
            pass


async def _until_no_open_runs(host: Any, within: float = 5.0) -> dict[str, Any]:
    """Poll a host (another process) until it has no open run; its last status."""
    with trio.fail_after(within):
        while True:
            status: dict[str, Any] = await ray_result(host.status.remote())
            if not status["open_runs"]:
                return status
            await trio.sleep(0.05)


async def _status(rt: Any) -> dict[str, Any]:
    statuses = [await ray_result(link.handle.status.remote()) for link in rt.links]
    return {key: sum(s[key] for s in statuses) for key in ("runs", "open_runs")}


async def test_leaving_the_block_cancels_the_run_on_the_host() -> None:
    async with shared_hosts() as rt:
        async with rt.astream_events("forever", "a b c") as stream:
            async for event in stream:
                if event.event == "on_chain_stream":
                    break
        # Leaving waited for the run to end on the host.
        assert (await _status(rt))["open_runs"] == 0

        # Cancelled once it has started (its start is read first: a cancel sent at once
        # may reach the host before the run starts, and a run that never started has
        # no events at all; see test_a_run_cancelled_before_it_starts_has_no_events).
        async with rt.astream_events("forever", "a b c") as stream:
            events = [await stream.__anext__()]
            assert events[0].event == "on_chain_start"
            cancelled = time.monotonic()
            stream.cancel()
            with pytest.raises(RunCancelledError):
                async for event in stream:  # kept one by one: the loop ends by raising
                    events.append(event)  # noqa: PERF401
        assert time.monotonic() - cancelled < 5  # a promptness bound, not an outcome
        assert events[-1].status == "cancelled"
        assert [e for e in events if e.status is not None] == [events[-1]]
        check_events(events)


@asynccontextmanager
async def _runtime_on(where: str) -> AsyncIterator[tuple[Any, Any]]:
    """A runtime that runs the registry's performers (in this process, or on the
    module's Ray host), and how it names the one-at-a-time performer."""
    if where == "in process":
        async with open_runtime() as rt:
            yield rt, performers()["one-at-a-time"]
    else:
        async with shared_hosts() as rt:
            yield rt, "one-at-a-time"


@pytest.mark.parametrize("where", ["in process", "ray"])
async def test_a_run_cancelled_before_it_starts_has_no_events(where: str) -> None:
    """A run that had not started when it was cancelled never starts: its consumer sees
    no event at all, and iteration raises RunCancelledError. A run that had started
    ends with exactly one terminal event, status cancelled. The same on a Ray host as in
    process. Ordered without timing: the performer takes one run at a time, so a run
    asked for while another holds it waits, not started, in the actor's mailbox."""
    with trio.fail_after(60):  # a bound for a hang, not a timing the test relies on
        async with _runtime_on(where) as (rt, one_at_a_time):
            async with rt.astream_events(one_at_a_time, "a") as holder:
                started = [await holder.__anext__(), await holder.__anext__()]
                assert [e.event for e in started] == ["on_chain_start", "on_chain_stream"]

                async with rt.astream_events(one_at_a_time, "b") as waiting:
                    waiting.cancel()
                    seen: list[StreamEvent] = []
                    with pytest.raises(RunCancelledError):
                        async for event in waiting:  # kept one by one: the loop ends by raising
                            seen.append(event)  # noqa: PERF401
                    assert seen == []
                    assert waiting.output is None

                # Left without cancelling or reading: the block returns while the holder
                # still holds the performer (it waits for no run that never started).
                async with rt.astream_events(one_at_a_time, "c"):
                    pass

                holder.cancel()
                ended: list[StreamEvent] = []
                with pytest.raises(RunCancelledError):
                    async for event in holder:
                        ended.append(event)  # noqa: PERF401
            assert [(e.event, e.status) for e in ended] == [("on_chain_error", "cancelled")]
            assert ended[0].run.run_id == holder.run_id
            assert ended[0].data.error == "cancelled"
            check_events(started + ended)
            assert rt.open_runs == 0
            if where == "ray":
                assert (await _status(rt))["runs"] == 0
                await _until_no_open_runs(rt.links[0].handle)


async def test_closing_under_live_runs_cancels_them_and_raises_the_blocks_error() -> None:
    from actors.testing import EventCollector

    collector = EventCollector()
    with pytest.raises(ExceptionGroup) as caught:  # the block's own error, as it was
        async with shared_hosts() as rt:
            await rt.subscribe(collector, drop_oldest=True)
            left_open = rt.astream_events("forever", "a b")
            await left_open.__aenter__()  # never left: the runtime's close must end it
            await left_open.__anext__()
            async with trio.open_nursery() as nursery:
                for _ in range(10):  # each once its run has started on the host
                    await nursery.start(_read_all, rt.astream_events("forever", "x"))
                1 / 0  # noqa: B018  # the block fails with live runs
    assert [type(e) for e in caught.value.exceptions] == [ZeroDivisionError]
    # The close waited for the run it cancelled to end on the host, not for its grace:
    # the run's cancelled terminal event came back before the hosts were told to close.
    assert len(collector.ended) == 11
    terminal = [e for e in collector.of_tree(left_open.run_id) if e.is_terminal]
    assert [(e.run_id, e.status) for e in terminal] == [(left_open.run_id, "cancelled")]
    with pytest.raises(RuntimeClosedError):
        rt.astream_events("step", "x")
    async with shared_hosts() as again:
        await _until_no_open_runs(again.links[0].handle)


async def _read_all(
    stream: Any, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Read ``stream`` to its end; started once its run's first event is read."""
    async with stream:
        started = False
        async for _ in stream:
            if not started:
                started = True
                task_status.started()


async def test_a_cancelled_consumer_leaves_no_run_behind() -> None:
    async with shared_hosts() as rt:
        for delay in (0, 0.001, 0.01, 0.05):
            with trio.move_on_after(delay):
                async with rt.astream_events("forever", "a b") as stream:
                    async for _ in stream:
                        pass
        assert rt.open_runs == 0
        await _until_no_open_runs(rt.links[0].handle)


def test_consumers_that_stop_at_random_points_leave_no_run_behind() -> None:
    """Generated cases, each under a watchdog that dumps trio's task tree on a hang:
    a deadline anywhere (before the start reaches the host, mid-stream, at the end),
    consumers that break out, runs of every shape; then nothing is left running."""
    rng = random.Random(int(os.environ.get("TROUPE_RAY_SEED", "18")))
    cases = int(os.environ.get("TROUPE_RAY_CASES", "300"))

    async def main() -> None:
        async with shared_hosts() as rt:
            for _ in range(cases):
                delay = rng.choice([0.0, rng.uniform(0, 0.003), rng.uniform(0, 0.03), 1.0])
                name = rng.choice(["forever", "step", "chatty", "cat", "fails"])
                events: list[StreamEvent] = []
                with trio.move_on_after(delay):
                    try:
                        async with rt.astream_events(name, 50 if name == "chatty" else "a b") as s:
                            async for event in s:
                                events.append(event)
                                if rng.random() < 0.1:
                                    break
                    except ValueError:
                        assert name == "fails"
                if events:
                    check_events(events, complete=False)
                assert rt.open_runs == 0
            await _until_no_open_runs(rt.links[0].handle)

    # Each case takes at most about a second (a deadline of 1 s on a run that never ends).
    testing.run_watched(main, seconds=60 + cases, label="ray: consumers stopping at random points")


async def test_a_stalled_consumer_holds_its_window_and_no_other_run() -> None:
    window = 64
    async with (
        shared_hosts(window=window) as rt,
        rt.astream_events("chatty", 100_000) as stalled,
    ):
        await stalled.__anext__()  # then stops reading
        for _ in range(3):
            assert await rt.ainvoke("chatty", 5_000) == 5_000
        await trio.sleep(0.2)
        assert stalled.buffered <= window
        stalled.cancel()
        with pytest.raises(RunCancelledError):
            async for _ in stalled:
                pass


async def test_hosts_and_drivers_stay_the_same_size_run_after_run() -> None:
    import gc

    async def round_of_runs(rt: Any) -> None:
        for _ in range(600):
            async with rt.astream_events("step", "a b c") as stream:
                async for _ in stream:
                    pass

        async def one() -> None:
            with trio.move_on_after(0.05):  # some are cancelled, some end well
                async with rt.astream_events("chatty", 20) as stream:
                    async for _ in stream:
                        pass

        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(one)

    async with shared_hosts() as rt:
        host = rt.links[0].handle
        counts = []
        for _ in range(4):
            await round_of_runs(rt)
            await _until_no_open_runs(host)  # the cancelled ones finish there too
            gc.collect()
            status = await ray_result(host.status.remote(collect=True))
            counts.append((status["python_objects"], len(gc.get_objects())))
    (host_first, driver_first), (host_last, driver_last) = counts[1], counts[-1]
    print("live objects (host, driver) after each round:", counts)
    assert host_last < host_first * 1.03, counts
    assert driver_last < driver_first * 1.03, counts


async def test_many_concurrent_runs_each_get_their_own_events() -> None:
    results: dict[int, list[StreamEvent]] = {}
    async with open_ray_runtime(registry=REGISTRY, hosts=2, host_options={"num_cpus": 0}) as rt:

        async def one(i: int) -> None:
            async with rt.astream_events("step", f"run {i} of many") as stream:
                results[i] = [event async for event in stream]

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(one, i)
    assert sorted(results) == list(range(100))
    for i, events in results.items():
        check_events(events)
        assert [e.data.chunk for e in events if e.event == "on_chain_stream"] == [
            "run",
            str(i),
            "of",
            "many",
        ]


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
async def test_a_dead_host_ends_its_runs_with_error_events(how: str) -> None:
    async with open_ray_runtime(registry=REGISTRY, host_options={"num_cpus": 0}) as rt:
        host = rt.links[0].handle
        pid = (await ray_result(host.status.remote()))["pid"]
        events: list[StreamEvent] = []
        killed = 0.0
        with pytest.raises(HostDiedError), trio.fail_after(30):
            async with rt.astream_events("paced", "tick") as stream:
                async for event in stream:
                    events.append(event)
                    if len(events) == 5:
                        killed = time.monotonic()
                        if how == "ray.kill":
                            ray.kill(host)
                        else:
                            os.kill(pid, signal.SIGKILL)
        noticed = time.monotonic() - killed
        ends = [e for e in events if e.status is not None]
        assert ends[-1].run.run_id == stream.run_id and ends[-1].status == "error"
        assert "HostDiedError" in (ends[-1].data.error or "")
        check_events(events)
        print(f"a host killed by {how}: its runs ended {noticed * 1000:.0f} ms later")
        with pytest.raises(HostDiedError, match="every host"):
            async with rt.astream_events("step", "x"):
                pass


DRIVER = textwrap.dedent(
    """
    import sys, trio, ray
    from actors.ray import open_ray_runtime

    async def main(host, performer, run_input):
        async with open_ray_runtime(
            registry="tests.ray_performers:performers", names=[host], lease=1.0
        ) as rt:
            async with rt.astream_events(performer, run_input) as stream:
                async for event in stream:
                    if event.event == "on_chain_stream":
                        print("started", flush=True)
                        await trio.sleep_forever()  # and read no more

    ray.init(address=sys.argv[1], log_to_driver=False)
    run_input = int(sys.argv[4]) if sys.argv[4].isdigit() else sys.argv[4]
    trio.run(main, sys.argv[2], sys.argv[3], run_input)
    """
)


async def _other_driver(host: str, performer: str, run_input: str) -> trio.Process:
    """A driver in a process of its own, once its run has started (and it stopped
    reading it)."""
    address = ray.get_runtime_context().gcs_address
    driver = await trio.lowlevel.open_process(
        [sys.executable, "-c", DRIVER, address, host, performer, run_input],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert driver.stdout is not None
    with trio.fail_after(60):
        said = b""
        while b"\n" not in said:
            said += await driver.stdout.receive_some()
    assert said.startswith(b"started")
    return driver


async def _stop(driver: trio.Process) -> None:
    driver.kill()
    await driver.wait()
    if driver.stdout is not None:
        await driver.stdout.aclose()


async def test_a_driver_that_stops_reading_holds_back_no_other_driver() -> None:
    host = "troupe-shared-host"
    stalled = await _other_driver(host, "chatty", "1000000")
    try:
        async with open_ray_runtime(registry=REGISTRY, names=[host]) as rt:
            with trio.fail_after(30):
                for _ in range(3):
                    assert await rt.ainvoke("chatty", 5_000) == 5_000
            status = await ray_result(rt.links[0].handle.status.remote())
            assert status["drivers"] == 2 and status["runs"] == 1  # the stalled one waits
    finally:
        await _stop(stalled)
        ray.kill(ray.get_actor(host, namespace="troupe"))


async def test_a_dead_drivers_runs_are_cancelled_on_the_host() -> None:
    driver = await _other_driver("troupe-lease-host", "forever", "a b")
    try:
        host: Any = ray.get_actor("troupe-lease-host", namespace="troupe")
        assert (await ray_result(host.status.remote()))["open_runs"] == 1
        driver.send_signal(signal.SIGKILL)
        await driver.wait()
        status = await _until_no_open_runs(host, within=10)
        assert status["drivers"] == 0
    finally:
        await _stop(driver)
        ray.kill(ray.get_actor("troupe-lease-host", namespace="troupe"))


class _Nested:
    class Error(Exception):
        """A nested exception type."""


class _NeedsTwo(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(a + b)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("plain"),
        KeyError("key"),
        RunCancelledError("stopped"),
        _Nested.Error("inner"),
        OSError(2, "No such file"),
    ],
    ids=repr,
)
def test_an_error_comes_back_as_its_own_type_with_its_arguments(exc: Exception) -> None:
    from actors.ray._errors import error_from_record, error_record

    back = error_from_record(error_record(exc))
    assert type(back) is type(exc) and back.args == exc.args and str(back) == str(exc)


def test_an_error_that_stands_for_another_crosses_as_the_one_it_stands_for() -> None:
    from actors.ray._errors import error_from_record, error_record

    journaled = JournaledError("KeyError: 'boom'", "builtins.KeyError")
    record = error_record(journaled)
    assert record == {"type": "builtins.KeyError", "args": ["'boom'"], "message": "'boom'"}
    assert record["type"] == error_type_name(journaled)  # named as the journal names it
    assert isinstance(error_from_record(record), KeyError)
    remote = RemoteRunError("somewhere.never.Imported", "far")
    back = error_from_record(error_record(remote))
    assert isinstance(back, RemoteRunError) and str(back) == str(remote)
    assert back.type_name == remote.type_name and back.message == "far"
    # a journal too old to name the type: the journaled error itself, whole
    old = error_from_record(error_record(JournaledError("KeyError: 'boom'")))
    assert isinstance(old, JournaledError) and old.described == "KeyError: 'boom'"


def test_an_error_the_driver_cannot_rebuild_is_named_not_lost() -> None:
    from actors.ray._errors import error_from_record, error_record

    records: list[dict[str, Any]] = [
        {"type": "somewhere.never.Imported", "args": [], "message": "far"},
        {"type": "builtins.len", "args": [], "message": "not a type"},
        {"type": "trio.Cancelled", "args": [], "message": "never rebuilt"},
        {"type": "tests.ray_performers.OddError", "args": "not a list", "message": "odd"},
    ]
    for record in records:
        back = error_from_record(record)
        if record["type"].endswith("OddError"):
            assert isinstance(back, OddError)
            continue
        assert isinstance(back, RemoteRunError) and back.type_name == record["type"]
        assert str(back) == f"{record['type']}: {record['message']}"
    record = error_record(_NeedsTwo(1, 2))
    assert record["args"] == [3]
    assert isinstance(error_from_record(record), _NeedsTwo)  # rebuilt without __init__
    odd = error_record(OddError())
    assert odd == {
        "type": "tests.ray_performers.OddError",
        "args": [],
        "message": "<str() failed: RuntimeError>",
    }


async def test_the_http_edge_serves_runs_on_the_cluster_unchanged() -> None:
    from ag_ui.core import Event
    from pydantic import TypeAdapter

    from .sse_client import read_sse, serving

    question = {"performer": "cat", "input": {"input": "where is the cat?"}}
    local_cat = {"cat": performers()["cat"]}
    async with (
        serving(local_cat) as served,
        served.client.stream("POST", "/runs/stream", json=question) as response,
    ):
        local = [e.json() for e in await read_sse(response)]
    async with shared_hosts() as rt, serving(rt.performers, runtime=rt) as served:
        async with served.client.stream("POST", "/runs/stream", json=question) as response:
            assert response.status_code == 200
            remote = [e.json() for e in await read_sse(response)]
        body = {**question, "protocol": "ag-ui"}
        async with served.client.stream("POST", "/runs/stream", json=body) as response:
            ag_ui = [e.json() for e in await read_sse(response)]
        waited = (await served.client.post("/runs/wait", json=question)).json()
        missing = await served.client.post("/runs/wait", json={"performer": "step", "input": 3})
        viewed = (await served.client.get("/viewer/runs")).json()["runs"]
    assert renamed(remote) == renamed(local)
    adapter: TypeAdapter[Any] = TypeAdapter(Event)
    for event in ag_ui:
        adapter.validate_python(event)
    assert ag_ui[0]["type"] == "RUN_STARTED" and ag_ui[-1]["type"] == "RUN_FINISHED"
    assert waited["status"] == "ok" and "under the bed" in waited["output"]["output"]
    assert missing.status_code == 422 and missing.json()["field"] == "input"
    assert len(viewed) == 3 and {r["status"] for r in viewed} == {"ok"}


async def test_troupe_serve_ray_streams_and_drains_on_sigterm() -> None:

    from .sse_client import first_line, stream_then_sigterm
    from .test_demo import TROUPE

    address = ray.get_runtime_context().gcs_address
    process = await trio.lowlevel.open_process(
        [*TROUPE, "serve", REGISTRY, "--ray", address, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        url = ""
        with trio.fail_after(60):
            while "serving on" not in url:
                url = await first_line(process)
        url = url.split("serving on ")[1].strip()
        body = {"performer": "paced", "input": "tick"}
        seen, code = await stream_then_sigterm(process, url, body)
    finally:
        process.kill()
        await process.wait()
    assert seen[-2].event == "on_chat_model_error"
    assert seen[-2].json()["data"]["error"] == "cancelled"
    assert seen[-1].event == "error" and code == 0


def test_a_host_whose_trio_side_stopped_answers_every_start() -> None:
    """The host class itself, on an asyncio loop as Ray runs it, without Ray."""
    import asyncio

    from actors.ray import TroupeHost

    async def main() -> None:
        host = TroupeHost(REGISTRY, lease=10.0)
        assert "step" in (await host.ready())["performers"]
        assert await host.start("driver", 0, {"performer": "nobody", "window": 1}) == {
            "type": "builtins.LookupError",
            "args": ["no performer named 'nobody'; there are " + str(sorted(performers()))],
            "message": "no performer named 'nobody'; there are " + str(sorted(performers())),
        }
        host._in_trio = lambda fn, *args: None  # type: ignore[method-assign]  # trio never answers
        pending = asyncio.ensure_future(
            host.start("driver", 1, {"performer": "step", "input": "a", "window": 4})
        )
        await asyncio.sleep(0.05)
        assert not pending.done()
        host._trio_done(RuntimeError("it stopped"))
        answer = await asyncio.wait_for(pending, 5)
        assert answer is not None and "trio runtime stopped" in answer["message"]
        with pytest.raises(RuntimeError, match="trio runtime stopped"):
            await host.start("driver", 2, {"performer": "step", "input": "a", "window": 4})
        # The trio side did not really stop: end it, so that no thread outlives the test.
        assert host._trio is not None
        await host._trio.stop()

    asyncio.run(main())
    for thread in threading.enumerate():
        if thread.name == "troupe (trio)":
            thread.join(5)
            assert not thread.is_alive()


async def test_a_run_paused_on_one_host_is_resumed_on_another(tmp_path: Path) -> None:
    from runtime import Resume, RunPaused

    url = f"sqlite:///{tmp_path}/shared.db"
    registry = "tests.ray_performers:journaled_performers"
    async with open_ray_runtime(registry=registry, hosts=1, store=url) as first:
        with pytest.raises(RunPaused) as paused:
            await first.ainvoke("payer", "pay five", run_id="paused-run")
    assert [p.id for p in paused.value.pending] == ["p1"]
    async with open_ray_runtime(registry=registry, hosts=1, store=url) as second:
        out = await second.ainvoke(
            "payer", None, resume=Resume("paused-run", {"p1": True}), run_id="resumed-run"
        )
    assert out["output"] == "paid"


async def _until_buffered(stream: Any, count: int) -> None:
    """Wait until ``count`` of the stream's events have come from the host."""
    for _ in range(3000):
        if stream.buffered >= count:
            return
        await trio.sleep(0.01)
    pytest.fail(f"{stream.buffered} of {count} events came in 30 s")


async def test_every_read_of_a_ray_stream_is_a_checkpoint() -> None:
    """Trio's checkpoint rule holds for a Ray run's streams as for a local one's (they
    are the runtime's own stream classes): a cancelled reader gets no event and loses
    none; a reader yields at least every SCHEDULE_EVERY reads, also when the host's
    events are all here already."""
    from runtime import SCHEDULE_EVERY, HostedChunkStream, HostedStream

    from .test_checkpoints import read_checking_every_so_many, read_each_after_a_cancelled_read

    count = 3 * SCHEDULE_EVERY
    async with shared_hosts(window=4 * count) as rt:
        stream = rt.astream_events("chatty", count)
        assert isinstance(stream, HostedStream)
        got = []
        async with stream:
            got.append(await stream.__anext__())
            await _until_buffered(stream, count)  # the rest here, waiting to be read
            got += await read_each_after_a_cancelled_read(stream)
        assert [e.chunk for e in got[1:-1]] == list(range(count))
        assert stream.output == count
        chunks = rt.astream("chatty", count)
        assert isinstance(chunks, HostedChunkStream)
        async with chunks:
            read = [await chunks.__anext__()]
            await _until_buffered(chunks, count - 1)
            read += await read_checking_every_so_many(chunks)
        assert read == list(range(count))


async def test_a_server_on_ray_hosts_resumes_a_paused_run_from_the_shared_store(
    tmp_path: Path,
) -> None:
    """``POST /runs/{id}/resume`` on a server whose runs go to Ray hosts: the paused
    run's record comes from the hosts' shared store, and the new run replays it on a
    host. Every wrong resume is refused as on a local runtime."""
    from protocol import structure_any
    from runtime import NoStoreError, UnknownRunError

    from .sse_client import read_sse, serving

    url = f"sqlite:///{tmp_path}/shared.db"
    registry = "tests.ray_performers:journaled_performers"
    async with open_ray_runtime(registry=registry, hosts=1, store=url) as rt:
        with pytest.raises(UnknownRunError):
            await rt.get_run("nobody")
        async with serving(rt.performers, runtime=rt) as served:
            async with served.client.stream(
                "POST", "/runs/stream", json={"input": "pay five", "run_id": "paused-run"}
            ) as response:
                assert response.status_code == 200
                paused = [e.json() for e in await read_sse(response)]
            assert paused[-1]["run_id"] == "paused-run"
            pending = structure_any(paused[-1]["data"]["output"]).pending
            assert [p.id for p in pending] == ["p1"]
            assert (await rt.get_run("paused-run")).status == "paused"
            unknown = await served.client.post(
                "/runs/nobody/resume", json={"decisions": {"p1": True}}
            )
            assert unknown.status_code == 404 and unknown.json()["field"] == "run_id"
            wrong = await served.client.post(
                "/runs/paused-run/resume", json={"decisions": {"p9": True}}
            )
            assert wrong.status_code == 422 and wrong.json()["field"] == "decisions"
            async with served.client.stream(
                "POST",
                "/runs/paused-run/resume",
                json={"decisions": {"p1": True}, "run_id": "resumed-run"},
            ) as response:
                assert response.status_code == 200
                resumed = [e.json() for e in await read_sse(response)]
            assert resumed[-1]["run_id"] == "resumed-run"
            assert resumed[-1]["data"]["output"]["output"] == "paid"
            assert [e["name"] for e in resumed if e["event"] == "on_tool_start"] == ["pay"]
            again = await served.client.post(
                "/runs/paused-run/resume", json={"decisions": {"p1": True}, "stream": False}
            )
            assert again.status_code == 409 and again.json()["field"] == "run_id"
        assert (await rt.get_run("paused-run")).resumed_by == "resumed-run"
    async with shared_hosts() as rt:  # hosts without a store
        with pytest.raises(NoStoreError):
            await rt.get_run("paused-run")
        async with serving(rt.performers, runtime=rt) as served:
            response = await served.client.post(
                "/runs/paused-run/resume", json={"decisions": {"p1": True}}
            )
            assert response.status_code == 501
