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
- :func:`create` starts (or, by name, finds) one named actor in namespace ``"mtdesk"``,
  placed by :mod:`mtdesk.actors.scheduling` (``MTDESK_RAY_PLACEMENT``, custom resources).
- :func:`find` returns a named actor or None; :func:`wait_names_free` waits until killed
  actors' names are released.
- :func:`nodes` lists the cluster's nodes (id, alive, address, resources);
  :func:`node_of` says which node an actor runs on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import ray

from mtdesk.actors import rayauth
from mtdesk.actors.scheduling import Kind, placement_options
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


def init(settings: Settings) -> bool:
    """Start or join Ray unless this process already did; True when this call did it
    (the caller then owns the instance and shuts it down with :func:`shutdown`)."""
    if ray.is_initialized():
        return False
    rayauth.say_once(rayauth.prepare(settings.ray_address))
    ray.init(**init_kwargs(settings))
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


def create(actor_cls: Any, name: str, kind: Kind, settings: Settings, *args: Any,
           detached: bool = False, namespace: str | None = NAMESPACE,
           options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """Start the named actor (or get the running one of that name) placed for ``kind``;
    ``args``/``kwargs`` go to the class's constructor, ``options`` to Ray."""
    opts: dict[str, Any] = {"name": name, "namespace": namespace, "get_if_exists": True,
                            **placement_options(kind, settings.ray_placement,
                                                cluster_resources()),
                            **(options or {})}
    if detached:
        opts["lifetime"] = "detached"
    return actor_cls.options(**opts).remote(*args, **kwargs)


def cluster_resources() -> dict[str, float]:
    """The cluster's total resources (custom ones included), or {} without Ray."""
    if not ray.is_initialized():
        return {}
    return {str(k): float(v) for k, v in ray.cluster_resources().items()}


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
