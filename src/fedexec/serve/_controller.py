"""The controller: a named actor that reconciles the declared applications.

State (guarded by ``lock``; ``version`` bumps on every change routers see)::

    apps     name -> {"route_prefix", "ingress", "deployments": [names], "deleting"}
    deps     "app#name" -> _Deployment: spec, target count, replicas, status
    loads    router id -> (time, {"app#name": ongoing + queued})  (no lock: set on the loop)

One thread reconciles every ``TICK`` s: starts replicas up to the target (new
code first, then old ones drained and stopped: a rolling update keeps at least
the target running), reconfigures replicas on a new ``user_config``, runs
health checks, replaces dead replicas, and applies the autoscaling policy.
Routers long-poll :meth:`ServeController.listen` for the routing table.

The controller is an async actor: a waiting long-poll is a coroutine on its
event loop, not a thread (every process holding a handle keeps one open), and a
load report is a dict update there. Calls that take the lock or wait on other
actors run on the loop's small thread pool (``asyncio.to_thread``). The
same thread keeps an HTTP proxy per node (``_proxies``) and saves the state to
the checkpoint store after each change (``_checkpoint``): the controller runs
with ``max_restarts=-1`` and a restarted one adopts what the last one ran.
Nothing is pickled under the lock: a deployment's init arguments are pickled
once per version before the lock is taken, a checkpoint is a snapshot taken
under it and pickled after.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
import traceback
import uuid
from typing import Any

import cloudpickle

from fedexec.util.registry import EntrySet
from fedexec.util.serialization import loads as safe_loads

from . import _checkpoint, _context
from ._client import NAMESPACE
from ._proxies import ProxySet
from .autoscaling import AutoscalingConfig, AutoscalingPolicy

TICK = 0.05
DRAIN_QUIET_S = 0.5
LOAD_TTL_S = 2.0
MAX_START_FAILURES = 3
STOP_S = 5.0
# a spec's init arguments as values: kept here (the refs among them stay alive, as
# the controller holds them) but neither checkpointed nor sent (``init`` is)
_VALUES = ("init_args", "init_kwargs")


class _Replica:
    __slots__ = (
        "actor",
        "health_ref",
        "health_sent",
        "info",
        "last_health",
        "ready_ref",
        "reconfig_ref",
        "replica_id",
        "state",
        "user_config",
        "version",
    )

    def __init__(self, replica_id: str, actor: Any, version: str, user_config: Any,
                 info: dict[str, Any] | None = None) -> None:
        """A replica just started, or (``info``: its ``ready()``) adopted running."""
        self.replica_id, self.actor, self.version = replica_id, actor, version
        self.state = "RUNNING" if info else "STARTING"  # -> RUNNING -> STOPPING
        self.ready_ref: Any = None if info else actor.ready.remote()
        self.info: dict[str, Any] = dict(info or {})
        self.user_config = user_config
        self.reconfig_ref: Any = None
        self.health_ref: Any = None
        self.health_sent = 0.0
        self.last_health = time.monotonic()


class _Deployment:
    def __init__(self, app: str, spec: dict[str, Any]) -> None:
        self.app, self.name = app, spec["name"]
        self.replicas: list[_Replica] = []
        self.failures = 0
        self.message = ""
        self.status = "UPDATING"
        self.set_spec(spec)

    def set_spec(self, spec: dict[str, Any]) -> None:
        old_auto = getattr(self, "autoscaling", None)
        self.spec = spec
        auto = spec.get("autoscaling_config")
        self.autoscaling = AutoscalingConfig.from_value(auto) if auto else None
        if self.autoscaling is None:
            self.policy: AutoscalingPolicy | None = None
            self.target = int(spec["num_replicas"])
        elif old_auto != self.autoscaling:
            self.policy = AutoscalingPolicy(self.autoscaling)
            self.target = self.autoscaling.start_replicas
        self.failures = 0
        self.message = ""

    @property
    def key(self) -> str:
        return f"{self.app}#{self.name}"

    def running(self) -> list[_Replica]:
        return [r for r in self.replicas if r.state == "RUNNING"]


class ServeController:
    """The controller actor (see the module docstring)."""

    def __init__(self, http_options: dict[str, Any], detached: bool = False) -> None:
        _context.remember_executor()
        self.ex = _context.executor()
        self.secret = os.urandom(32)
        self.http_options = http_options
        self.proxies = ProxySet(self.ex, http_options, detached)
        self.stopping: dict[str, Any] = {}  # replica id -> actor, until it is killed
        self.lock = threading.RLock()
        self.version = 0
        self.apps: dict[str, dict[str, Any]] = {}
        self.deps: dict[str, _Deployment] = {}
        self.loads: dict[str, tuple[float, dict[str, int]]] = {}
        self.dead_reports: set[str] = set()
        self.stopped = False
        self.board = EntrySet("serve", self.ex)  # the applications the dashboard shows
        self.dirty = False  # state changed since the last checkpoint
        self.store, self.saves, state = _checkpoint.load(self.ex, NAMESPACE)
        if state is not None:
            self._restore(state)
        self.table = self._snapshot()  # the routing table listen() hands out
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the first listen()
        self.table_changed: asyncio.Event | None = None
        ctx = contextvars.copy_context()
        self.thread = threading.Thread(target=ctx.run, args=(self._run,), daemon=True,
                                       name="fedexec-serve-controller")
        self.thread.start()

    # ------------------------------------------------------------------ API
    def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "http_options": self.http_options}

    async def start_proxies(self, me: Any) -> dict[str, Any]:
        """Start the head's HTTP proxy and wait until it listens (its ``ready()``);
        the other nodes' proxies follow in the background. ``me``: this actor's
        handle, handed to every proxy and replica."""
        return await asyncio.to_thread(self.proxies.start_head, me)

    async def deploy_app(self, name: str, route_prefix: str | None,
                         specs: list[dict[str, Any]], ingress: str) -> None:
        """Declare application ``name`` (replacing its previous declaration)."""
        await asyncio.to_thread(self._deploy_app, name, route_prefix, specs, ingress)

    def _deploy_app(self, name: str, route_prefix: str | None, specs: list[dict[str, Any]],
                    ingress: str) -> None:
        specs = self._pickle_init_args(name, specs)  # outside the lock: may be slow
        with self.lock:
            for other, app in self.apps.items():
                if other != name and route_prefix is not None \
                        and app["route_prefix"] == route_prefix and not app["deleting"]:
                    raise ValueError(
                        f"route_prefix {route_prefix!r} is already used by application "
                        f"{other!r}; pick another prefix or delete that application")
            old = self.apps.get(name)
            names = [s["name"] for s in specs]
            if old is not None:
                for dname in old["deployments"]:
                    if dname not in names:
                        self._stop_deployment(f"{name}#{dname}")
            for spec in specs:
                key = f"{name}#{spec['name']}"
                dep = self.deps.get(key)
                if dep is None:
                    self.deps[key] = _Deployment(name, spec)
                else:
                    dep.set_spec(spec)
                    dep.status = "UPDATING"
            self.apps[name] = {"route_prefix": route_prefix, "ingress": ingress,
                               "deployments": names, "deleting": False}
            self._bump()
        self._save(wait=True)

    async def delete_app(self, name: str) -> bool:
        return await asyncio.to_thread(self._delete_app, name)

    def _delete_app(self, name: str) -> bool:
        with self.lock:
            app = self.apps.get(name)
            if app is None:
                return False
            for dname in app["deployments"]:
                self._stop_deployment(f"{name}#{dname}")  # replicas drain in the background
            del self.apps[name]
            self._bump()
        self._save(wait=True)
        return True

    async def listen(self, version: int, timeout: float) -> dict[str, Any]:
        """The routing table, once its version differs from ``version`` (or after
        ``timeout`` s). Waits on the event loop: no thread per waiting caller."""
        if self.loop is None:
            self.loop, self.table_changed = asyncio.get_running_loop(), asyncio.Event()
        deadline = time.monotonic() + timeout
        while self.table["version"] == version and not self.table["stopped"]:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            assert self.table_changed is not None
            try:
                await asyncio.wait_for(self.table_changed.wait(), left)
            except asyncio.TimeoutError:
                break
        return self.table

    def record_load(self, router_id: str, loads: dict[str, int]) -> None:
        """A router's queue depths (one dict store on the loop: no lock)."""
        self.loads[router_id] = (time.monotonic(), loads)

    def report_dead(self, key: str, replica_id: str) -> None:
        self.dead_reports.add(replica_id)  # read by the reconcile thread under its lock

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._status)

    def _status(self) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {}
            for name, app in self.apps.items():
                deps = {d: self._dep_status(self.deps[f"{name}#{d}"])
                        for d in app["deployments"] if f"{name}#{d}" in self.deps}
                out[name] = {"status": self._app_status(app, deps),
                             "route_prefix": app["route_prefix"], "deployments": deps,
                             "ingress": app["ingress"],
                             "message": "; ".join(d["message"] for d in deps.values()
                                                  if d["message"])}
            return {"applications": out, "http_options": self.http_options,
                    "proxies": self.proxies.status()}

    async def deployment_specs(self) -> dict[str, dict[str, Any]]:
        """The declared spec of every deployment, by ``app#name``."""
        def specs() -> dict[str, dict[str, Any]]:
            with self.lock:
                return {k: {n: v for n, v in d.spec.items() if n not in ("init", *_VALUES)}
                        for k, d in self.deps.items()}

        return await asyncio.to_thread(specs)

    async def replica_pids(self, key: str) -> list[int]:
        def pids() -> list[int]:
            with self.lock:
                dep = self.deps.get(key)
                return [] if dep is None else [r.info["pid"] for r in dep.running()]

        return await asyncio.to_thread(pids)

    async def shutdown(self) -> list[int]:
        """Stop every replica and proxy now (routes drop at once); the proxies' pids."""
        return await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> list[int]:
        with self.lock:
            self.stopped = True
            self.store = None  # serve.shutdown stops it
            replicas = {r.replica_id: r.actor for d in self.deps.values() for r in d.replicas}
            replicas.update(self.stopping)  # those still draining too
            self.deps.clear()
            self.apps.clear()
            self._bump()
            self.board.clear()
        stops = {rid: actor.stop.remote() for rid, actor in replicas.items()}
        deadline = time.monotonic() + STOP_S  # all stop at once: STOP_S in all, not each
        for replica_id, actor in replicas.items():
            self._kill(replica_id, actor, stops[replica_id], deadline)
        return self.proxies.shutdown(STOP_S)

    # ------------------------------------------------------------------ internals
    def _bump(self) -> None:
        """The state routers see changed (called under the lock): a new routing
        table, and the waiting long-polls woken."""
        self.version += 1
        self.dirty = True
        self.table = self._snapshot()
        if self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(self._wake)
            except RuntimeError:
                pass  # the loop is closed: the actor is going away

    def _wake(self) -> None:
        """On the loop: release every waiting long-poll."""
        assert self.table_changed is not None
        self.table_changed.set()
        self.table_changed = asyncio.Event()

    # ------------------------------------------------------------------ checkpoint
    def _save(self, wait: bool = False) -> None:
        """Send the state to the checkpoint store (see ``_checkpoint``): a snapshot
        taken under the lock, pickled outside it. Its sequence number is taken with
        the snapshot and the store keeps the highest, so a save that is pickled
        slower than a later one never overwrites it."""
        with self.lock:
            store = self.store
            if store is None:
                return
            self.saves += 1
            self.dirty = False
            seq, state = self.saves, self._state()
        ref = store.save.remote(seq, _checkpoint.dumps(state))
        if wait:
            ref.result(30)

    def _state(self) -> dict[str, Any]:
        """What a restarted controller needs (called under the lock): copies of the
        containers that change in place; specs are replaced, never changed."""
        return {
            "secret": self.secret, "version": self.version,
            "apps": {name: dict(app) for name, app in self.apps.items()},
            "stopping": dict(self.stopping), "proxies": self.proxies.state(),
            "deps": {key: {"app": d.app, "target": d.target,
                           "spec": {k: v for k, v in d.spec.items() if k not in _VALUES},
                           "status": d.status,
                           "replicas": [(r.replica_id, r.actor, r.version, r.user_config,
                                         dict(r.info) if r.state == "RUNNING" else None)
                                        for r in d.replicas if r.state != "STOPPING"]}
                     for key, d in self.deps.items()}}

    def _restore(self, state: dict[str, Any]) -> None:
        """Take over from a controller that died (its last checkpoint): running
        replicas and proxies are adopted, starting ones awaited, stopping ones
        killed."""
        self.secret, self.version = state["secret"], state["version"] + 1
        self.apps = state["apps"]
        for key, saved in state["deps"].items():
            spec = saved["spec"]
            spec["init_args"], spec["init_kwargs"] = safe_loads(spec["init"])
            dep = _Deployment(saved["app"], spec)
            dep.target, dep.status = saved["target"], saved["status"]
            dep.replicas = [_Replica(*r) for r in saved["replicas"]]
            self.deps[key] = dep
        for replica_id, actor in state["stopping"].items():
            self._kill_later(replica_id, actor)
        self.proxies.restore(state["proxies"])

    def _snapshot(self) -> dict[str, Any]:
        deps = {}
        for key, dep in self.deps.items():
            deps[key] = {"max_ongoing": int(dep.spec["max_ongoing_requests"]),
                         "replicas": [{"replica_id": r.replica_id, "actor": r.actor, **r.info}
                                      for r in dep.running()]}
        routes = {app["route_prefix"]: f"{name}#{app['ingress']}"
                  for name, app in self.apps.items()
                  if app["route_prefix"] is not None and not app["deleting"]}
        return {"version": self.version, "secret": self.secret, "deployments": deps,
                "routes": routes, "stopped": self.stopped}

    def _app_status(self, app: dict[str, Any], deps: dict[str, dict[str, Any]]) -> str:
        if app["deleting"]:
            return "DELETING"
        states = {d["status"] for d in deps.values()}
        if "DEPLOY_FAILED" in states:
            return "DEPLOY_FAILED"
        if "UNHEALTHY" in states:
            return "UNHEALTHY"
        if states <= {"HEALTHY"}:
            return "RUNNING"
        return "DEPLOYING"

    def _dep_status(self, dep: _Deployment) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for r in dep.replicas:
            counts[r.state] = counts.get(r.state, 0) + 1
        return {"status": dep.status, "message": dep.message, "replica_states": counts,
                "target_replicas": dep.target,
                "pids": [r.info["pid"] for r in dep.running()]}

    def _stop_deployment(self, key: str) -> None:
        dep = self.deps.pop(key, None)
        if dep is not None:
            for r in dep.replicas:
                self._stop(r, dep)

    def _new_replica(self, dep: _Deployment) -> _Replica:
        spec = dep.spec
        replica_id = f"{dep.name}#{uuid.uuid4().hex[:6]}"
        from ._replica import Replica

        opts = dict(spec.get("actor_options") or {})
        opts.setdefault("max_concurrency", 64)
        opts["max_restarts"] = 0
        self.dirty = True
        actor = self.ex.options(**opts).actor(
            Replica, dep.name, dep.app, replica_id, spec["target"], spec["init"],
            spec.get("user_config"), self.secret,
            spec.get("root_path", ""), int(spec["max_ongoing_requests"]),
            self.proxies.controller)
        return _Replica(replica_id, actor, spec["version"], spec.get("user_config"))

    def _pickle_init_args(self, app: str, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``specs`` with each one's ``init_args`` and ``init_kwargs`` also pickled
        into ``init`` (called outside the lock): once per deployment version, as a
        spec whose version is declared already keeps that one's ``init``. Every
        replica of the version is started with those bytes."""
        with self.lock:
            known = {key: d.spec for key, d in self.deps.items()}
        out = []
        for spec in specs:
            spec = dict(spec)
            old = known.get(f"{app}#{spec['name']}")
            if old is not None and old["version"] == spec["version"]:
                spec["init"] = old["init"]
            else:
                spec["init"] = cloudpickle.dumps((spec["init_args"], spec["init_kwargs"]))
            out.append(spec)
        return out

    def _stop(self, r: _Replica, dep: _Deployment) -> None:
        """Drain and stop ``r`` in the background (routers stop sending to it first);
        it is killed after ``graceful_shutdown_timeout_s`` at the latest."""
        if r.state == "STOPPING":
            return
        r.state = "STOPPING"
        self.stopping[r.replica_id] = r.actor
        self.dirty = True
        timeout = float(dep.spec.get("graceful_shutdown_timeout_s", 20.0))

        def stop() -> None:
            try:
                self.ex.get(r.actor.drain.remote(DRAIN_QUIET_S, timeout), timeout=timeout + 5)
            except Exception:
                pass
            self._kill(r.replica_id, r.actor)

        threading.Thread(target=contextvars.copy_context().run, args=(stop,),
                         daemon=True).start()

    def _kill(self, replica_id: str, actor: Any, stop: Any = None,
              deadline: float | None = None) -> None:
        """Ask a replica to stop (``stop``: asked already), wait until ``deadline``
        (default: ``STOP_S`` from now), then kill it."""
        try:
            if stop is None:
                stop = actor.stop.remote()
            left = STOP_S if deadline is None else deadline - time.monotonic()
            stop.result(max(0.0, left))
        except Exception:
            pass  # dead, or hung: the kill ends it
        try:
            self.ex.kill(actor)
        except Exception:
            pass
        with self.lock:
            if self.stopping.pop(replica_id, None) is not None:
                self.dirty = True

    def _kill_later(self, replica_id: str, actor: Any) -> None:
        """Kill a replica on a thread of its own (the caller may hold the lock)."""
        self.stopping[replica_id] = actor
        self.dirty = True
        threading.Thread(target=contextvars.copy_context().run,
                         args=(self._kill, replica_id, actor), daemon=True).start()

    # ------------------------------------------------------------------ reconcile
    def _run(self) -> None:
        while not self.stopped:
            try:
                with self.lock:
                    changed = False
                    for dep in list(self.deps.values()):
                        changed |= self._reconcile(dep)
                    if changed:
                        self._bump()
                    self.board.sync({name: (app["status"], {
                        "route_prefix": app["route_prefix"], "ingress": app["ingress"],
                        "deployments": {d: f"{s['status']} {len(s['pids'])}/"
                                        f"{s['target_replicas']}"
                                        for d, s in app["deployments"].items()},
                        "message": app["message"]}) for name, app in
                        self._status()["applications"].items()})
                if self.proxies.reconcile():  # remote calls: outside the lock
                    self.dirty = True
                if self.dirty:
                    self._save()
            except Exception:
                traceback.print_exc()
            time.sleep(TICK)

    def _load(self, key: str, now: float) -> int:
        total = 0
        for router, (at, loads) in list(self.loads.items()):
            if now - at > LOAD_TTL_S:
                self.loads.pop(router, None)
            else:
                total += loads.get(key, 0)
        return total

    def _reconcile(self, dep: _Deployment) -> bool:
        now = time.monotonic()
        changed = self._check_started(dep) | self._check_health(dep, now)
        spec = dep.spec
        version = spec["version"]
        live = [r for r in dep.replicas if r.state != "STOPPING"]
        current = [r for r in live if r.version == version]
        old = [r for r in live if r.version != version]
        if dep.policy is not None and not old:
            dep.target = dep.policy.decide(dep.target, self._load(dep.key, now), now)
        if dep.failures >= MAX_START_FAILURES:
            dep.status = "DEPLOY_FAILED" if not dep.running() else "UNHEALTHY"
            return changed
        for _ in range(dep.target - len(current)):
            dep.replicas.append(self._new_replica(dep))
        running_new = [r for r in current if r.state == "RUNNING"]
        if len(current) > dep.target:  # scale down: the starting ones first
            extra = sorted(current, key=lambda r: r.state == "RUNNING")
            for r in extra[:len(current) - dep.target]:
                self._stop(r, dep)
                changed = True
        excess_old = len(running_new) + len(old) - dep.target
        for r in sorted(old, key=lambda r: r.state == "RUNNING")[:max(0, excess_old)]:
            self._stop(r, dep)
            changed = True
        for r in running_new:  # a new user_config: reconfigure in place
            if r.user_config != spec.get("user_config") and r.reconfig_ref is None:
                r.reconfig_ref = r.actor.reconfigure.remote(spec.get("user_config"))
            if r.reconfig_ref is not None and r.reconfig_ref.done():
                try:
                    r.reconfig_ref.result(0)
                    r.user_config = spec.get("user_config")
                except Exception as exc:
                    dep.message = f"reconfigure failed on {r.replica_id}: {exc}"
                    self._replace(r)
                    changed = True
                r.reconfig_ref = None
        dep.replicas = [r for r in dep.replicas if r.state != "STOPPING"]
        settled = (len(running_new) == dep.target and not old
                   and all(r.user_config == spec.get("user_config") for r in running_new))
        if settled:
            dep.status, dep.failures = "HEALTHY", 0
        elif dep.status != "UNHEALTHY":
            dep.status = "UPDATING"
        return changed

    def _check_started(self, dep: _Deployment) -> bool:
        changed = False
        for r in dep.replicas:
            if r.state != "STARTING" or not r.ready_ref.done():
                continue
            try:
                r.info = r.ready_ref.result(0)
                r.state = "RUNNING"
                r.last_health = time.monotonic()
                dep.failures = 0
                changed = True
            except Exception as exc:
                dep.failures += 1
                dep.message = (f"replica {r.replica_id} failed to start "
                               f"({dep.failures} in a row): {exc}")
                self._replace(r)
        return changed

    def _check_health(self, dep: _Deployment, now: float) -> bool:
        period = float(dep.spec.get("health_check_period_s", 10))
        timeout = float(dep.spec.get("health_check_timeout_s", 30))
        changed = False
        for r in dep.running():
            if r.replica_id in self.dead_reports:
                self.dead_reports.discard(r.replica_id)
                dep.message = f"replica {r.replica_id} died; replaced"
                self._replace(r)
                changed = True
                continue
            if r.health_ref is None:
                if now - r.last_health >= period:
                    r.health_ref, r.health_sent = r.actor.check_health.remote(), now
                continue
            if r.health_ref.done():
                try:
                    r.health_ref.result(0)
                    r.last_health = now
                except Exception as exc:
                    dep.message = f"replica {r.replica_id} failed its health check: {exc}"
                    self._replace(r)
                    changed = True
                r.health_ref = None
            elif now - r.health_sent > timeout:
                dep.message = f"replica {r.replica_id} did not answer its health check in " \
                              f"{timeout} s; replaced"
                self._replace(r)
                changed = True
        return changed

    def _replace(self, r: _Replica) -> None:
        """Drop a failed replica (the next pass starts another)."""
        r.state = "STOPPING"
        self._kill_later(r.replica_id, r.actor)
