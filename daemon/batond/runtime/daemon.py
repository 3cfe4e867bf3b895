"""The composition root: builds every component and owns their lifecycle.

One ``asyncio.TaskGroup`` holds the HTTP server, the sources, the engine
loop, the runner and the housekeeping tasks. READY=1 goes out only once
every one of them has said it is serving. SIGHUP reloads rules, playbooks
and models (validated first, swapped whole or not at all); SIGTERM stops
intake, gives running steps a bounded grace period, records the rest as
``interrupted`` and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from batond.errors import BatondError, ConfigError
from batond.intake.bus import Bus
from batond.load.config import Config, load_config, read_secret
from batond.metrics import Metrics
from batond.runtime.api import build_app
from batond.runtime.control import DaemonControl
from batond.runtime.sdnotify import Notifier

__all__ = ["Daemon", "main"]

log = logging.getLogger("batond")

#: How long running steps may go on after SIGTERM before they are recorded interrupted.
STOP_GRACE_S = 20.0
#: How long a request still in progress at stop may take (aiohttp's default, 60 s, would
#: not fit in the unit's TimeoutStopSec after STOP_GRACE_S).
HTTP_SHUTDOWN_S = 5.0
#: How often housekeeping runs (kill switch file, rule state, model training, pruning).
HOUSEKEEPING_S = 1.0
PRUNE_EVERY_S = 3600.0
MODEL_SAVE_EVERY_S = 300.0
KILL_SWITCH_CHECK_S = 0.1


class Daemon(DaemonControl):
    """A running batond. ``await Daemon(config).serve()`` runs until stopped."""

    def __init__(self, config: Config, *, notifier: Notifier | None = None) -> None:
        super().__init__(config, Metrics())
        self.notifier = notifier or Notifier()
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._started: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------
    async def serve(self) -> None:
        self.notifier.status("loading rules and models")
        self.load_definitions()  # ConfigError before anything starts
        self.notifier.status("opening journal")
        await self.open_journal()
        self.bus = Bus(self.metrics)
        self.build_runtime()
        await self.reconcile()
        self._install_signal_handlers()
        async with asyncio.TaskGroup() as tg:
            self._spawn(tg, "http", self._serve_http)
            for name, source in self.sources.items():
                self._spawn(tg, name, source.run)
            self._spawn(tg, "runner", self._serve_runner)
            self._spawn(tg, "engine", self._serve_engine)
            self._spawn(tg, "housekeeping", self._housekeeping)
            watchdog = tg.create_task(self.notifier.watchdog(), name="watchdog")
            await self._wait_started()
            if not self._stop.is_set():  # a component that failed to start: never READY
                await self.resume_interrupted()
                self.ready = True
                self.notifier.ready(self._status_line())
                log.info("ready: %s", self._status_line())
                # numpy for the anomaly model loads after READY, off the loop
                await asyncio.to_thread(self.models.prepare)
            await self._until_stopped()
            await self._shutdown()
            watchdog.cancel()
            for task in self._tasks:
                task.cancel()

    def _spawn(
        self, tg: asyncio.TaskGroup, name: str, body: Callable[[asyncio.Event], Awaitable[None]]
    ) -> None:
        started = self._started[name] = asyncio.Event()
        self._tasks.append(tg.create_task(self._guard(name, body, started), name=name))

    async def _guard(
        self, name: str, body: Callable[[asyncio.Event], Awaitable[None]], started: asyncio.Event
    ) -> None:
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
        pending = {name: ev for name, ev in self._started.items()}
        while pending:
            self.notifier.status(f"starting: waiting for {', '.join(sorted(pending))}")
            waiters = {asyncio.ensure_future(ev.wait()): n for n, ev in pending.items()}
            stop = asyncio.ensure_future(self._stop.wait())
            done, rest = await asyncio.wait([*waiters, stop], return_when=asyncio.FIRST_COMPLETED)
            for fut in rest:
                fut.cancel()
            if stop in done:
                return
            for fut in done:
                pending.pop(waiters[fut], None)

    async def _until_stopped(self) -> None:
        while not self._stop.is_set():
            stop = asyncio.ensure_future(self._stop.wait())
            reload = asyncio.ensure_future(self._reload_requested.wait())
            await asyncio.wait([stop, reload], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            reload.cancel()
            if self._reload_requested.is_set() and not self._stop.is_set():
                self._reload_requested.clear()
                self.notifier.reloading()
                result = await self._reload_guarded()
                self.notifier.ready(self._status_line(result))

    async def _reload_guarded(self) -> dict[str, Any]:
        """A bug met while reloading must not stop a daemon that runs fine on the old set."""
        try:
            return await self.reload()
        except Exception:
            log.exception("reload failed, old rules kept")
            self.metrics.reloads.labels("error").inc()
            return {"ok": False}

    async def _shutdown(self) -> None:
        self.ready = False
        self.notifier.stopping("stopping: intake closed, letting running steps finish")
        log.info("stopping")
        self.bus.close()
        for name in self.sources:
            self._cancel(name)
        self._cancel("engine")
        await self.runner.shutdown(STOP_GRACE_S)
        await self.save_state()
        self._cancel("runner")
        self._cancel("housekeeping")
        self._cancel("http")

    def _cancel(self, name: str) -> None:
        for task in self._tasks:
            if task.get_name() == name:
                task.cancel()

    def stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload_requested.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        loop.add_signal_handler(signal.SIGUSR2, _log_tasks)

    def _status_line(self, reload_result: dict[str, Any] | None = None) -> str:
        s = self.status()
        text = (
            f"{s['mode']}{' (paused)' if s['paused'] else ''}: {s['rules_loaded']} rules, "
            f"{s['open_incidents']} open incidents, {self.runner.active_count()} runs active"
        )
        if reload_result is not None and not reload_result.get("ok"):
            text += "; last reload failed, old rules kept"
        return text

    # -- components --------------------------------------------------------
    async def _serve_http(self, started: asyncio.Event) -> None:
        token = read_secret(self.config.http.token_file) if self.config.http.token_file else None
        app = build_app(
            self,
            self.metrics,
            token=token,
            max_body=self.config.http.max_body,
            add_input_routes=self.add_input_routes,
        )
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=HTTP_SHUTDOWN_S
        )
        await runner.setup()
        site = web.TCPSite(runner, self.config.http.host, self.config.http.port, reuse_address=True)
        try:
            await site.start()
            started.set()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    async def _serve_runner(self, started: asyncio.Event) -> None:
        serving = asyncio.ensure_future(self.runner.serve())
        started.set()
        await serving

    async def _serve_engine(self, started: asyncio.Event) -> None:
        started.set()
        while True:
            deadline = self.engine.next_deadline()
            timeout = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.time()))
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # lands as its timeout fires, and the engine task then never stops (seen here)
            try:
                async with asyncio.timeout(timeout):
                    item, arrived = await self.bus.get()
            except TimeoutError:
                await self.handle(self.engine.tick(time.time()), None)
                continue
            now = time.time()
            if arrived - self.pause_checked >= KILL_SWITCH_CHECK_S:
                self.refresh_pause()  # the kill switch file acts within 0.1 s, not a second
            self.state_dirty = True
            try:
                outputs = self.evaluate(item, now)
            except Exception:  # a bug in one evaluation must not stop the daemon
                log.exception("evaluating %r failed", item)
                continue
            if self.recorder is not None:
                self.recorder.append(item)
            await self.handle(outputs, arrived)

    async def _housekeeping(self, started: asyncio.Event) -> None:
        started.set()
        last_prune = last_model_save = time.time()
        await self.prune(last_prune)
        while True:
            now = time.time()
            self.refresh_pause()
            await self.train_models(now)
            if now - last_prune >= PRUNE_EVERY_S:
                last_prune = now
                await self.prune(now)
            if self.state_dirty:
                # pending for: timers, count windows and absent: groups change without a
                # decision; saved each second they survive a SIGKILL (a second's loss at most)
                self.state_dirty = False
                self.save_state_soon()
            if now - last_model_save >= MODEL_SAVE_EVERY_S:
                last_model_save = now
                await self.save_models()
            await asyncio.sleep(HOUSEKEEPING_S)


def _log_tasks() -> None:
    """SIGUSR2: every asyncio task and where it waits, for "why does it not stop?"."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        out.write(f"\n{task!r}\n")
        task.print_stack(limit=8, file=out)
    log.warning("tasks on SIGUSR2:%s", out.getvalue())


async def _run(config: Config) -> int:
    daemon = Daemon(config)
    try:
        await daemon.serve()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except BatondError as exc:
        print(f"batond: {exc}", file=sys.stderr)
        return 1
    finally:
        await daemon.close()
    return daemon.exit_code


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_run(config))
    return 0
