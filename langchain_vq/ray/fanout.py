"""A search fanned out to every shard actor through one Ray compiled graph, when it can be.

Why: a normal actor call goes through Ray's task machinery (task spec, scheduling, the reply
through the object store's protocol) at every call; a compiled graph sets that up once and
then passes each search's request and answers through shared-memory channels read by a loop
already running in every actor. Measured side by side (100,000 rows, 2 shards, load 4.5-5.7): a
sharded search took 3.46 ms p50 through the graph against 6.65 ms through normal calls, one store
2.53 ms (docs/architecture.md, "Sharded search").

The graph is compiled in a background thread when a search finds none; until it is up, searches
make normal calls, so no search waits for a compile (seconds: ``_start_compile``).

What the shard calls guarantee holds here too, because anything the graph cannot do falls back
to them (``ShardedCollection`` makes the normal calls whenever ``search`` returns None):

- A shard actor that dies: the graph raises (the actor's death, a closed channel) and is
  dropped; the caller reruns the search with normal calls, which Ray retries on the restarted
  actor (``max_task_retries``), so the query returns the same answer. A new graph is compiled
  on a search after ``RECOMPILE_AFTER`` seconds.
- No hang: requests are submitted and answers awaited with the call timeout; a timeout drops
  the graph and raises ``GetTimeoutError`` (the caller's ``ShardUnavailableError``).
- A typed error raised by a shard's own search (a ``VQError``) propagates as from a normal call,
  and the graph stays: Ray keeps a graph usable after application errors. Any other error from
  the graph drops it and the search reruns as normal calls, which raise the error if it is real.
- A graph that cannot be compiled, or actors already in another store's graph in this process
  (an actor runs one graph at a time; Ray compiles a second one whose searches then hang),
  leave normal calls, retried after ``RECOMPILE_AFTER`` seconds. Actors in a graph of another
  driver process are not seen: give each driver its own actors.
- Searches from several driver threads: one at a time uses the graph (only the compiling
  process may call it, one execution in flight), the others make normal calls meanwhile.
- ``close()`` tears the graph down so that the actors can join another graph (``servers=``),
  and stops the idle-teardown thread.

The cost: an actor in a graph polls its input channel while idle, about a third of a core each
here (docs/architecture.md, "Sharded search"). So a graph unused for ``idle_timeout`` seconds
(``IDLE_TEARDOWN``) is torn down by a daemon thread, under the lock (a search meanwhile makes
normal calls), and the next search starts compiling it again, with no ``RECOMPILE_AFTER`` wait: an idle
store costs no CPU. ``compiled_graph=False`` where cores are scarce even while searching.

In the actor the graph's loop runs in a thread of its own, beside the one serving normal calls:
``ShardServer`` serializes its methods with a lock, so a shard still runs one call at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from langchain_vq.errors import VQError
from langchain_vq.ray._common import require_ray_core

ray = require_ray_core()

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

#: Seconds after a failed or dropped graph before a search compiles a new one.
RECOMPILE_AFTER = 5.0
#: Seconds a compile waits for a dropped graph's teardown (milliseconds, measured) before giving up.
TEARDOWN_BEFORE_COMPILE = 2.0
#: Seconds ``close()`` waits for a graph's teardown (Ray's own limit is 30 s per actor).
TEARDOWN_WAIT = 60.0
#: Seconds without a search after which the graph is torn down, so idle actors stop polling
#: (a third of a core each). Measured at load 12-13: recompiling on the same actors took 0.4-1.7 s
#: (the first compile in fresh actors 10-18 s), a teardown 20-80 ms; a minute of idle polling is
#: 20 CPU seconds per actor, so a rebuild costs a few percent of the idle time it ends.
IDLE_TEARDOWN = 60.0

#: Ids of the actors in a graph of this process. Ray lets a second graph compile on an actor
#: already running one, and that graph's searches then hang until the timeout (an actor runs one
#: graph at a time): a store compiles only on actors no graph of this process holds.
_IN_GRAPH: set[str] = set()
_IN_GRAPH_LOCK = threading.Lock()


class CompiledFanout:
    """``search`` of every shard actor through one compiled graph, compiled in the background on first use."""

    def __init__(
        self, actors: Sequence[Any], timeout: float, idle_timeout: float | None = IDLE_TEARDOWN
    ) -> None:
        self._actors = list(actors)
        self._timeout = timeout
        self._idle_timeout = idle_timeout  # None: the graph lives until close()
        self._graph: Any = None
        self._retry_at = 0.0  # time.monotonic() before which no graph is compiled
        self._lock = threading.Lock()  # one execution at a time, from one thread
        self._teardowns: list[threading.Thread] = []
        self._closed = False
        self._last_used = 0.0  # time.monotonic() of the graph's last search
        self._reaper: threading.Thread | None = None  # tears the graph down once idle
        self._wake = threading.Event()  # set: the reaper looks again now (graph dropped, closing)
        self._compiling: threading.Thread | None = None  # compiles while searches make normal calls

    def search(self, requests: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]] | None:
        """Each actor's ``search(requests[i])`` answer, or None when the graph cannot answer.

        Raises:
            ray.exceptions.GetTimeoutError: A shard did not answer within the timeout.
        """
        if self._closed or not self._lock.acquire(blocking=False):
            return None
        try:
            graph = self._graph
            if graph is None:
                self._start_compile()
                return None
            try:
                answers = graph.execute(*requests)  # one ref per shard
                deadline = time.monotonic() + self._timeout
                return [a.get(timeout=max(0.0, deadline - time.monotonic())) for a in answers]
            except ray.exceptions.RayChannelTimeoutError as exc:
                self._drop(f"no answer within {self._timeout:g} s")
                raise ray.exceptions.GetTimeoutError(str(exc)) from exc
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, VQError):
                    raise  # the shard's own typed error, as a normal call raises it; the graph stays
                # The graph's loop failed in an actor: Ray retried it on the restarted actor (a
                # RaySystemError), or a channel of the dead one was gone (a ValueError from Ray's
                # channel layer, seen in tests/ray). Normal calls rerun the search; an error of
                # the shard's own that is not typed then comes back from them.
                self._drop(f"{type(exc.cause).__name__}: {exc.cause}")
                return None
            except Exception as exc:  # noqa: BLE001 - an actor died, a channel closed: calls take over
                self._drop(f"{type(exc).__name__}: {exc}")
                return None
        finally:
            self._last_used = time.monotonic()  # idle from the end of the last search
            self._lock.release()

    @property
    def compiled(self) -> bool:
        """Whether a graph is compiled (searches go through it)."""
        return self._graph is not None

    def wait_compiled(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a compile in progress; whether a graph is compiled."""
        thread = self._compiling
        if thread is not None:
            thread.join(timeout)
        return self.compiled

    def _start_compile(self) -> None:
        """Compile in the background; searches make normal calls until the graph is up.

        A compile takes seconds (0.4-1.7 s on actors that ran a graph before, 10-18 s on fresh
        ones at load 12-13): a search that waited for it would be the slowest one by far.
        """
        if self._compiling is not None or time.monotonic() < self._retry_at:
            return
        self._compiling = threading.Thread(
            target=self._compile_locked, name="langchain_vq-graph-compile", daemon=True
        )
        self._compiling.start()

    def _compile_locked(self) -> None:
        try:
            with self._lock:  # searches meanwhile fail to take it and make normal calls
                if not self._closed and self._graph is None:
                    self._compile()
        finally:
            self._compiling = None

    def _compile(self) -> Any:
        if time.monotonic() < self._retry_at:
            return None
        for thread in self._teardowns:  # an actor joins a new graph once its old one has ended
            thread.join(TEARDOWN_BEFORE_COMPILE)
        self._teardowns = [t for t in self._teardowns if t.is_alive()]
        keys = _keys(self._actors)
        with _IN_GRAPH_LOCK:
            busy = bool(self._teardowns) or not _IN_GRAPH.isdisjoint(keys)
            if not busy:
                _IN_GRAPH.update(keys)  # claimed before compiling: another store waits its turn
        if busy:  # a graph of another store (or our last one) still runs on these actors
            self._retry_at = time.monotonic() + RECOMPILE_AFTER
            return None
        from ray.dag import InputNode, MultiOutputNode

        try:
            with InputNode() as requests:
                dag = MultiOutputNode([a.search.bind(requests[i]) for i, a in enumerate(self._actors)])
            self._graph = dag.experimental_compile(_submit_timeout=self._timeout)
        except Exception as exc:  # noqa: BLE001 - any reason not to compile leaves normal calls
            logger.info("Sharded search uses normal actor calls: no compiled graph (%s).", exc)
            _release(keys)
            self._retry_at = time.monotonic() + RECOMPILE_AFTER
            return None
        self._last_used = time.monotonic()
        if self._idle_timeout is not None:
            self._wake = threading.Event()  # one per graph: an earlier reaper keeps its own
            self._reaper = threading.Thread(
                target=self._reap,
                args=(self._graph, self._idle_timeout, self._wake),
                name="langchain_vq-graph-idle",
                daemon=True,
            )
            self._reaper.start()
        return self._graph

    def _reap(self, graph: Any, idle_timeout: float, wake: threading.Event) -> None:
        """Tear ``graph`` down once no search used it for ``idle_timeout`` seconds (its actors poll).

        The teardown holds the lock: a search meanwhile makes normal calls, and the next one
        compiles a new graph (no ``RECOMPILE_AFTER`` wait: an idle graph did not fail).
        """
        while True:
            with self._lock:  # a search holds it for at most the call timeout
                if self._closed or self._graph is not graph:
                    return  # dropped or closed: torn down elsewhere
                idle_for = time.monotonic() - self._last_used
                if idle_for >= idle_timeout:
                    self._graph = None
                    logger.info("Sharded search's compiled graph idle %.0f s: torn down.", idle_for)
                    _teardown(graph, _keys(self._actors))
                    return
            wake.wait(idle_timeout - idle_for)

    def _drop(self, why: str) -> None:
        """Forget the graph; tear it down in the background (it may wait on a dead actor)."""
        logger.info("Sharded search's compiled graph dropped (%s); normal calls take over.", why)
        graph, self._graph = self._graph, None
        self._retry_at = time.monotonic() + RECOMPILE_AFTER
        self._wake.set()  # its reaper ends (after the lock's holder, this search, lets go)
        if graph is not None:
            thread = threading.Thread(target=_teardown, args=(graph, _keys(self._actors)), daemon=True)
            thread.start()
            self._teardowns.append(thread)

    def close(self) -> None:
        """Tear the graph down (and wait for earlier teardowns), so the actors can join another."""
        self._closed = True  # no new search or compile; the reaper ends at its next look
        self._wake.set()
        compiling = self._compiling
        if compiling is not None:
            compiling.join(TEARDOWN_WAIT)
        with self._lock:
            graph, self._graph = self._graph, None
        if self._reaper is not None:
            self._reaper.join(TEARDOWN_WAIT)
            self._reaper = None
        if graph is not None:
            _teardown(graph, _keys(self._actors))
        deadline = time.monotonic() + TEARDOWN_WAIT
        for thread in self._teardowns:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._teardowns = []


def _teardown(graph: Any, keys: set[str]) -> None:
    try:
        graph.teardown()
    except Exception as exc:  # noqa: BLE001 - a graph whose actor died may fail to tear down cleanly
        logger.info("Compiled graph teardown: %s", exc)
    _release(keys)


def _keys(actors: Sequence[Any]) -> set[str]:
    return {a._actor_id.hex() for a in actors}  # noqa: SLF001 - Ray's id of the actor


def _release(keys: set[str]) -> None:
    with _IN_GRAPH_LOCK:
        _IN_GRAPH.difference_update(keys)
