"""The lifecycle of a running batond: start-up order, READY, signals, reload, stop.

:func:`batond.runtime.root.build` makes the components; :class:`Daemon` runs
them. One ``asyncio.TaskGroup`` holds the HTTP server, the sources, the
engine loop, the runner and the housekeeping tasks. READY=1 goes out only
once every one of them has said it is serving. SIGHUP reloads rules,
playbooks and models (validated first, swapped whole or not at all); SIGTERM
stops intake, gives running steps a bounded grace period, records the rest
as ``interrupted`` and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import io
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from batond.errors import BatondError, ConfigError
from batond.intake.http import add_input_routes
from batond.load.config import Config, load_config, read_secret
from batond.runtime.api import build_app
from batond.runtime.heap import CHECK_EVERY_INPUTS, LongLivedHeap
from batond.runtime.logs import configure as configure_logs
from batond.runtime.looplag import LoopLag
from batond.runtime.ports import save_models
from batond.runtime.root import Components, build
from batond.runtime.sdnotify import Notifier, WatchdogThread

__all__ = ["Daemon", "main"]

log = logging.getLogger("batond")

#: How long running steps may go on after SIGTERM before they are recorded interrupted.
STOP_GRACE_S = 20.0
#: How long the bookkeeping of runs that ended during the stop may take.
AFTER_RUN_GRACE_S = 5.0
#: How long a request still in progress at stop may take (aiohttp's default, 60 s, would
#: not fit in the unit's TimeoutStopSec after STOP_GRACE_S).
HTTP_SHUTDOWN_S = 5.0
#: How often housekeeping runs (kill switch file, rule state, model training, pruning).
HOUSEKEEPING_S = 1.0
#: Longest the engine loop works through a burst of queued inputs before it lets the
#: other tasks of the loop (HTTP, runs) have their turn: /healthz stays fast in a storm.
ENGINE_TURN_S = 0.001
PRUNE_EVERY_S = 3600.0
#: How long the fleet agent's last batches may take to reach the broker at stop.
FLEET_STOP_GRACE_S = 2.0
MODEL_SAVE_EVERY_S = 300.0

Body = Callable[[asyncio.Event], Awaitable[None]]


class Daemon:
    """A running batond. ``await Daemon(components, notifier).serve()`` runs until stopped."""

    def __init__(self, parts: Components, notifier: Notifier) -> None:
        self._parts = parts
        self._notifier = notifier
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._started: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.exit_code = 0

    # -- lifecycle ---------------------------------------------------------------------
    async def serve(self) -> None:
        self._install_signal_handlers()
        async with asyncio.TaskGroup() as tg:
            self._spawn(tg, "http", self._serve_http)
            for name, source in self._parts.sources.items():
                self._spawn(tg, name, source.run)
            if self._parts.fleet_agent is not None:
                self._spawn(tg, "fleet-agent", self._parts.fleet_agent.run)
            self._spawn(tg, "runner", self._serve_runner)
            self._spawn(tg, "engine", self._serve_engine)
            self._spawn(tg, "housekeeping", self._housekeeping)
            looplag = LoopLag(self._parts.metrics.loop_lag)
            self._spawn(tg, "looplag", looplag.run)
            watchdog = self._start_watchdog(looplag)
            await self._wait_started()
            if not self._stop.is_set():  # a component that failed to start: never READY
                await self._become_ready()
            await self._until_stopped()
            await self._shutdown()
            if watchdog is not None:
                watchdog.stop()
            for task in self._tasks.values():
                task.cancel()

    def stop(self) -> None:
        self._stop.set()

    def _start_watchdog(self, looplag: LoopLag) -> WatchdogThread | None:
        timeout = self._notifier.watchdog_timeout
        if timeout is None:
            return None
        watchdog = WatchdogThread(self._notifier, timeout, lambda: looplag.last_beat)
        watchdog.start()
        return watchdog

    def request_reload(self) -> None:
        self._reload_requested.set()

    def _spawn(self, tg: asyncio.TaskGroup, name: str, body: Body) -> None:
        started = self._started[name] = asyncio.Event()
        self._tasks[name] = tg.create_task(self._guard(name, body, started), name=name)

    async def _guard(self, name: str, body: Body, started: asyncio.Event) -> None:
        """A component that dies stops the daemon cleanly instead of half-running."""
        try:
            await body(started)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("component %s failed; stopping", name)
            self.exit_code = 1
            self._stop.set()

    async def _wait_started(self) -> None:
        pending = dict(self._started)
        while pending:
            self._notifier.status(f"starting: waiting for {', '.join(sorted(pending))}")
            waiters = {asyncio.ensure_future(ev.wait()): n for n, ev in pending.items()}
            stop = asyncio.ensure_future(self._stop.wait())
            done, rest = await asyncio.wait([*waiters, stop], return_when=asyncio.FIRST_COMPLETED)
            for fut in rest:
                fut.cancel()
            if stop in done:
                return
            for fut in done:
                pending.pop(waiters[fut], None)

    async def _become_ready(self) -> None:
        parts = self._parts
        # what the last life left interrupted: resumed or escalated (per on_interrupt:)
        for record in parts.interrupted:
            by_run = parts.engine.resolves_by_run(record.rule)
            await parts.runner.resume(record, verify_by_run=by_run)
        parts.operator.set_ready(True)
        line = self._status_line()
        self._notifier.ready(line)
        log.info("ready: %s", line)
        # numpy for the anomaly model loads after READY, off the loop
        await asyncio.to_thread(parts.models.prepare)
        # what start-up made lives as long as the daemon: the collector need never walk it
        # again (a full collection of it held the loop for a tenth of a second in a storm)
        gc.collect()
        gc.freeze()

    async def _until_stopped(self) -> None:
        while not self._stop.is_set():
            stop = asyncio.ensure_future(self._stop.wait())
            reload = asyncio.ensure_future(self._reload_requested.wait())
            await asyncio.wait([stop, reload], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            reload.cancel()
            if self._reload_requested.is_set() and not self._stop.is_set():
                self._reload_requested.clear()
                self._notifier.reloading()
                result = await self._reload_guarded()
                self._notifier.ready(self._status_line(result))

    async def _reload_guarded(self) -> dict[str, Any]:
        """A bug met while reloading must not stop a daemon that runs fine on the old set."""
        try:
            return await self._parts.operator.reload()
        except Exception:
            log.exception("reload failed, old rules kept")
            self._parts.metrics.reloads.labels("error").inc()
            return {"ok": False}

    async def _shutdown(self) -> None:
        parts = self._parts
        parts.operator.set_ready(False)
        self._notifier.stopping("stopping: intake closed, letting running steps finish")
        log.info("stopping")
        parts.bus.close()
        self._cancel("engine")
        if parts.fleet_agent is not None:  # the last batch, while MQTT is still connected
            self._cancel("fleet-agent")
            await parts.fleet_agent.stop(FLEET_STOP_GRACE_S)
        for name in parts.sources:
            self._cancel(name)
        await parts.runner.shutdown(STOP_GRACE_S)
        await parts.after_run.drain(AFTER_RUN_GRACE_S)
        await parts.state.save()
        for name in ("runner", "housekeeping", "http"):
            self._cancel(name)

    def _cancel(self, name: str) -> None:
        task = self._tasks.get(name)
        if task is not None:
            task.cancel()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        loop.add_signal_handler(signal.SIGUSR2, _log_tasks)

    def _status_line(self, reload_result: dict[str, Any] | None = None) -> str:
        s = self._parts.operator.status()
        text = (
            f"{s['mode']}{' (paused)' if s['paused'] else ''}: {s['rules_loaded']} rules, "
            f"{s['open_incidents']} open incidents, {s['runs_active']} runs active"
        )
        if reload_result is not None and not reload_result.get("ok"):
            text += "; last reload failed, old rules kept"
        return text

    # -- components ----------------------------------------------------------------------
    async def _serve_http(self, started: asyncio.Event) -> None:
        parts = self._parts
        http = parts.config.http
        app = build_app(
            parts.operator,
            parts.metrics,
            token=read_secret(http.token_file) if http.token_file else None,
            max_body=http.max_body,
            add_input_routes=functools.partial(
                add_input_routes, bus=parts.bus, metrics=parts.metrics, ack=http.ack
            ),
        )
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=HTTP_SHUTDOWN_S
        )
        await runner.setup()
        site = web.TCPSite(runner, http.host, http.port, reuse_address=True)
        try:
            await site.start()
            started.set()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    async def _serve_runner(self, started: asyncio.Event) -> None:
        serving = asyncio.ensure_future(self._parts.runner.serve())
        started.set()
        await serving

    async def _serve_engine(self, started: asyncio.Event) -> None:
        """Inputs from the bus through the pipeline; timers when the bus is quiet."""
        started.set()
        bus, pipeline, pause = self._parts.bus, self._parts.pipeline, self._parts.pause
        loop = asyncio.get_running_loop()
        turn = loop.time()
        deadline = pipeline.next_deadline()
        heap = LongLivedHeap(self._parts.models.series_count)
        seen = 0
        while True:
            if loop.time() - turn >= ENGINE_TURN_S:
                # a burst never waits at bus.get(): let HTTP and the runner have the loop
                await asyncio.sleep(0)
                turn = loop.time()
                deadline = pipeline.next_deadline()  # (levers pulled meanwhile)
            timeout = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.time()))
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # lands as its timeout fires, and the engine task then never stops (seen here)
            try:
                async with asyncio.timeout(timeout):
                    item, arrived = await bus.get()
            except TimeoutError:
                deadline = await pipeline.tick(time.time())
                continue
            pause.refresh_if_stale(arrived)  # the kill switch file acts within 0.1 s
            try:
                deadline = await pipeline.observe(item, time.time(), arrived)
            finally:
                bus.evaluated()  # who waits for its decision (MQTT acks) learns of it
            seen += 1
            if not seen % CHECK_EVERY_INPUTS:
                heap.settle()

    async def _housekeeping(self, started: asyncio.Event) -> None:
        started.set()
        parts = self._parts
        last_prune = last_model_save = time.time()
        await self._prune(last_prune)
        while True:
            now = time.time()
            parts.pause.refresh()
            for job in parts.models.training_jobs(now):
                apply = await asyncio.to_thread(job)
                apply()
            _log_expression_errors(parts)
            if parts.notify is not None:
                parts.notify.flush_held()
            if now - last_prune >= PRUNE_EVERY_S:
                last_prune = now
                await self._prune(now)
            await parts.state.save_if_touched()
            if now - last_model_save >= MODEL_SAVE_EVERY_S:
                last_model_save = now
                await save_models(parts.models, parts.config.state_dir)
            await asyncio.sleep(HOUSEKEEPING_S)

    async def _prune(self, now: float) -> None:
        retention = self._parts.operator.config.journal.retention  # a reload may change it
        await self._parts.journal.prune(retention, now)


def _log_expression_errors(parts: Components) -> None:
    """Expression failures since the last look (counted false; each new message once)."""
    for rule, message in parts.engine.take_errors():
        log.warning("rule %s: expression failed (counted false): %s", rule, message)


def _log_tasks() -> None:
    """SIGUSR2: every asyncio task and where it waits, for "why does it not stop?"."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        out.write(f"\n{task!r}\n")
        task.print_stack(limit=8, file=out)
    log.warning("tasks on SIGUSR2:%s", out.getvalue())


async def _run(config: Config) -> int:
    notifier = Notifier()
    try:
        parts = await build(config, notifier)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except BatondError as exc:
        print(f"batond: {exc}", file=sys.stderr)
        return 1
    daemon = Daemon(parts, notifier)
    try:
        await daemon.serve()
    except BatondError as exc:
        print(f"batond: {exc}", file=sys.stderr)
        return 1
    finally:
        await parts.close()
    return daemon.exit_code


def main(args: argparse.Namespace) -> int:
    configure_logs(getattr(args, "log_level", None) or "info")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    configure_logs(getattr(args, "log_level", None) or config.log.level, config.log.format)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_run(config))
    return 0
