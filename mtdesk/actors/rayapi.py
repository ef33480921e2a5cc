"""Every call into Ray is made here: ``ray.init``, ``ray.remote``, actor options, named-actor
look-ups, ``ray.get``, ``ray.kill``, the node table.

The actor hosts (:class:`~mtdesk.actors.deploy.ShardHost`, the retrieval and policy hosts)
stay plain classes; the deployments speak to Ray only through these functions, so a reader
finds every Ray option in one place and the logic above it reads without Ray's API.

What a caller may rely on:

- :func:`init_kwargs` / :func:`init`: join ``MTDESK_RAY_ADDRESS`` when set, else start a
  local instance on free ports (``ray start --head`` would default to 6379, Redis's port).
  Only the composition root (the CLI, the benchmarks) starts Ray.
- :func:`actor_class` applies ``ray.remote`` with the restart policy of the product's
  actors: restarted for ever (``max_restarts=-1``), a node's actors come back on live nodes.
- :func:`actor_group` reserves the places of one kind's actors (a placement group spread
  or packed by ``MTDESK_RAY_PLACEMENT``, pinned by custom resources:
  :mod:`mtdesk.actors.scheduling`); :func:`create` starts (or, by name, finds) one named
  actor in namespace ``"mtdesk"`` in its place.
- :func:`find` returns a named actor or None; :func:`wait_names_free` waits until killed
  actors' names are released.
- :func:`local_cluster` simulates a multi-node cluster on one machine (benchmarks and
  drills; each node is a raylet with its own worker processes) and connects to it;
  :meth:`LocalCluster.kill_node` kills one node's processes at once.
- :func:`nodes` lists the cluster's nodes (id, alive, address, resources);
  :func:`node_of` says which node an actor runs on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import ray

from mtdesk.actors import rayauth
from mtdesk.actors.scheduling import Kind, Node, bundle, group_kind, group_strategy
from mtdesk.core.settings import Settings

NAMESPACE = "mtdesk"
T = TypeVar("T")


def init_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments for ``ray.init``: join ``settings.ray_address`` or start a local one."""
    if settings.ray_address:
        return {"address": settings.ray_address, "namespace": NAMESPACE,
                "log_to_driver": False}
    # No address: a fresh local instance on free ports (never Redis's 6379), reachable
    # from this machine only (rayauth: it runs without token authentication).
    return {"address": "local", "namespace": NAMESPACE, "include_dashboard": False,
            "log_to_driver": False, "_node_ip_address": rayauth.LOCAL_HOST,
            "logging_level": logging.WARNING}


def is_initialized() -> bool:
    return bool(ray.is_initialized())


_StartT = TypeVar("_StartT")


def _started(start: Callable[[], _StartT], undo: Callable[[], None]) -> _StartT:
    """``start()``, tried once more when Ray's node start-up timed out: Ray gives a
    starting raylet a fixed 30 s, which a machine saturated by other work can miss
    (seen on the project's shared 2-core machine at a load of 20+). ``undo`` clears
    what the failed try left before the second one."""
    try:
        return start()
    except Exception as exc:
        if "timed out during startup" not in str(exc):
            raise
        logging.getLogger(__name__).warning("Ray's node start-up timed out; trying once more")
        with contextlib.suppress(Exception):
            undo()
    return start()


def init(settings: Settings) -> bool:
    """Start or join Ray unless this process already did; True when this call did it
    (the caller then owns the instance and shuts it down with :func:`shutdown`)."""
    if ray.is_initialized():
        return False
    rayauth.say_once(rayauth.prepare(settings.ray_address))
    _started(lambda: ray.init(**init_kwargs(settings)), ray.shutdown)
    return True


def init_local(**kwargs: Any) -> bool:
    """A local instance for benchmarks and tools (same ownership rule as :func:`init`)."""
    if ray.is_initialized():
        return False
    address = kwargs.get("address")
    joining = None if address in (None, "local") else str(address)
    rayauth.say_once(rayauth.prepare(joining))
    local = {} if joining else {"_node_ip_address": rayauth.LOCAL_HOST}
    ray.init(**{"include_dashboard": False, "log_to_driver": False,
                "logging_level": logging.WARNING, **local, **kwargs})
    return True


def shutdown() -> None:
    ray.shutdown()


def actor_class(cls: type[Any], *, max_task_retries: int = -1, num_cpus: float = 0,
                **options: Any) -> Any:
    """``cls`` as a Ray actor class that Ray restarts whenever it dies (its node lost
    included: it comes back on a live node). ``num_cpus=0`` by default: the product's
    actors are I/O bound and may outnumber the cores."""
    return ray.remote(max_restarts=-1, max_task_retries=max_task_retries,
                      num_cpus=num_cpus, **options)(cls)


class ActorGroup:
    """Where one kind's actors go: a Ray placement group with one bundle per actor
    (:mod:`mtdesk.actors.scheduling`). Remove it with :func:`remove_group` once its actors
    are gone."""

    def __init__(self, kind: Kind, pg: Any, bundle: dict[str, float]) -> None:
        self.kind = kind
        self.pg = pg
        self.bundle = bundle

    def options(self, index: int) -> dict[str, Any]:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        custom = {k: v for k, v in self.bundle.items() if k != "CPU"}
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
                    self.pg, placement_group_bundle_index=index),
                "num_cpus": self.bundle["CPU"], **({"resources": custom} if custom else {})}


def actor_group(kind: Kind, settings: Settings, count: int, *, num_cpus: float = 0,
                detached: bool = False, timeout_s: float = 120.0) -> ActorGroup:
    """Reserve the places of ``count`` actors of ``kind`` (waits until Ray has them: a
    cluster without room, or whose nodes with the kind's resource are all gone, raises
    a RuntimeError saying what is missing)."""
    from ray.util.placement_group import placement_group, remove_placement_group

    one = bundle(kind, live_nodes(), num_cpus)
    pg = placement_group([dict(one) for _ in range(count)],
                         strategy=group_strategy(settings.ray_placement),
                         lifetime="detached" if detached else None)
    try:
        ray.get(pg.ready(), timeout=timeout_s)
    except Exception as exc:
        remove_placement_group(pg)
        raise RuntimeError(f"Ray has no room for {count} {group_kind(kind)} actor(s) of "
                           f"{one} each within {timeout_s:.0f} s") from exc
    return ActorGroup(kind, pg, one)


def remove_group(group: ActorGroup | None) -> None:
    if group is None or not ray.is_initialized():
        return
    from ray.util.placement_group import remove_placement_group

    with contextlib.suppress(Exception):
        remove_placement_group(group.pg)


def create(actor_cls: Any, name: str, group: ActorGroup, index: int, *args: Any,
           detached: bool = False, namespace: str | None = NAMESPACE,
           options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """Start the named actor (or get the running one of that name) in place ``index`` of
    ``group``; ``args``/``kwargs`` go to the class's constructor, ``options`` to Ray."""
    opts: dict[str, Any] = {"name": name, "namespace": namespace, "get_if_exists": True,
                            **group.options(index), **(options or {})}
    if detached:
        opts["lifetime"] = "detached"
    return actor_cls.options(**opts).remote(*args, **kwargs)


def live_nodes() -> list[Node]:
    """The cluster's live nodes with their resources ([] without Ray)."""
    if not ray.is_initialized():
        return []
    return [Node(n["node_id"], n["address"], n["resources"]) for n in nodes() if n["alive"]]


def find(name: str, namespace: str | None = NAMESPACE) -> Any | None:
    """The running actor named ``name``, or None."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def wait_names_free(names: Sequence[str], timeout_s: float = 10.0,
                    namespace: str | None = NAMESPACE) -> None:
    """Wait until killed actors' names are released, so a quick restart (which looks
    actors up by name) gets fresh actors rather than dying ones."""
    deadline = time.monotonic() + timeout_s
    for name in names:
        while time.monotonic() < deadline and find(name, namespace) is not None:
            time.sleep(0.05)


def get(refs: Any, timeout_s: float | None = None) -> Any:
    """``ray.get``: the result(s) of object ref(s), blocking."""
    return ray.get(refs, timeout=timeout_s)


def kill(actor: Any, *, restart: bool = False) -> None:
    """End an actor's process; ``restart=True`` lets Ray restart it (a crash, as seen)."""
    ray.kill(actor, no_restart=not restart)


def current_node_id() -> str:
    """The id of the Ray node this process runs on ("" outside Ray)."""
    if not ray.is_initialized():
        return ""
    return str(ray.get_runtime_context().get_node_id())


def _node_of_actor(_instance: object) -> str:
    return str(ray.get_runtime_context().get_node_id())


def node_of(actor: Any) -> Any:
    """An awaitable ref to the id of the node ``actor`` runs on (asked inside the actor
    process, so the actor's class needs no method for it)."""
    return actor.__ray_call__.remote(_node_of_actor)


def nodes() -> list[dict[str, Any]]:
    """The cluster's nodes: ``node_id``, ``alive``, ``address``, ``resources``."""
    return [{"node_id": str(n.get("NodeID", "")), "alive": bool(n.get("Alive")),
             "address": str(n.get("NodeManagerAddress", "")),
             "resources": {str(k): float(v) for k, v in (n.get("Resources") or {}).items()}}
            for n in ray.nodes()]


class LocalCluster:
    """A multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``)."""

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster

    @property
    def head_node_id(self) -> str:
        return str(self._cluster.head_node.node_id)

    def worker_node_ids(self) -> list[str]:
        return sorted(str(n.node_id) for n in self._cluster.worker_nodes)

    def kill_node(self, node_id: str) -> None:
        """Kill every process of a worker node at once, as a lost machine: its workers
        (the actors) with SIGKILL first, then the raylet and the node's services. (Ray's
        ``remove_node`` alone leaves the workers to notice their raylet is gone: for a
        moment a killed node's shard would still be sending.)"""
        from ray._private import ray_constants

        for node in list(self._cluster.worker_nodes):
            if str(node.node_id) == node_id:
                raylets = node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, [])
                for info in raylets:
                    for pid in _descendants(info.process.pid):
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(pid, signal.SIGKILL)
                self._cluster.remove_node(node, allow_graceful=False)
                return
        raise ValueError(f"no worker node {node_id} (the head node cannot be killed)")

    def add_node(self, cpus: float = 1, resources: Mapping[str, float] | None = None) -> str:
        node = self._cluster.add_node(num_cpus=cpus, resources=dict(resources or {}))
        return str(node.node_id)


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (from /proc: Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@contextlib.contextmanager
def local_cluster(nodes: int, *, cpus_per_node: float = 1,
                  node_failure_s: float | None = None) -> Iterator[LocalCluster]:
    """``nodes`` Ray nodes on this machine (the first is the head), this process connected
    as the driver; all stopped on exit. ``node_failure_s``: how soon a silent node is
    declared dead (Ray's default is about 30 s; drills shorten it)."""
    from ray.cluster_utils import Cluster

    head: dict[str, Any] = {"num_cpus": cpus_per_node, "include_dashboard": False}
    if node_failure_s is not None:
        period_ms = max(100, int(node_failure_s * 1000 / 3))
        head["_system_config"] = {"health_check_period_ms": period_ms,
                                  "health_check_timeout_ms": period_ms,
                                  "health_check_failure_threshold": 3}
    cluster = Cluster()
    try:
        _started(lambda: cluster.add_node(**head), cluster.shutdown)
        for _ in range(nodes - 1):
            _started(lambda: cluster.add_node(num_cpus=cpus_per_node), lambda: None)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
        try:
            yield LocalCluster(cluster)
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()
