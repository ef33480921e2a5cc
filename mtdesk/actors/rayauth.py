"""Ray's token authentication, said once in the product's words.

Ray 2.5x turns token authentication on for every local instance it starts and prints
its own warning about it at every start (of ``mtdesk demo``, ``serve`` and ``bench``).
:func:`prepare` (called by :mod:`mtdesk.actors.rayapi` just before ``ray.init``) decides
instead, and :func:`say_once` prints what the decision means, once per process:

- A local instance this process starts (no ``MTDESK_RAY_ADDRESS``) listens on
  127.0.0.1 only and runs with ``RAY_AUTH_MODE=disabled``: only this machine can reach
  it, and it lives as long as the process. An operator who sets ``RAY_AUTH_MODE``
  (e.g. ``token``) keeps that choice.
- Joining a cluster (``MTDESK_RAY_ADDRESS``): the cluster's own mode applies. Without
  ``RAY_AUTH_MODE=token`` anyone who can reach the cluster's ports can run code in it;
  the operator creates a token once (``ray get-auth-token --generate``) and gives every
  node and every ``mtdesk serve`` the same ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN``
  (or ``~/.ray/auth_token``). See docs/security.md.

Ray's own warning lines are kept out of the output (its auth module's logger is set
to ERROR), since the notice here replaces them; so is its "SIGTERM handler is not set"
warning when Ray is started from a thread (the demo does): the product's CLI installs
its own stop handlers after Ray is up.
"""

from __future__ import annotations

import logging
import os
import sys

AUTH_MODE = "RAY_AUTH_MODE"
LOCAL_HOST = "127.0.0.1"
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_RAY_WORKER_LOGGER = "ray._private.worker"
_said: set[str] = set()


class _NoThreadSigtermWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SIGTERM handler is not set")


_QUIET = _NoThreadSigtermWarning()


def prepare(address: str | None) -> str:
    """Set up the auth mode for ``ray.init`` (``address`` None: a local instance we
    start) and return the notice that explains it."""
    logging.getLogger(_RAY_AUTH_LOGGER).setLevel(logging.ERROR)
    worker_log = logging.getLogger(_RAY_WORKER_LOGGER)
    if _QUIET not in worker_log.filters:
        worker_log.addFilter(_QUIET)
    chosen = os.environ.get(AUTH_MODE, "").strip().lower()
    if address is None:
        if not chosen:
            # Read by ray.init and inherited by the Ray processes it starts.
            os.environ[AUTH_MODE] = "disabled"
            return (
                f"Ray: a local instance on {LOCAL_HOST} for this process only, without token "
                "authentication (nothing off this machine can reach it). To run on a "
                "cluster, see docs/security.md (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN)."
            )
        return f"Ray: a local instance on {LOCAL_HOST} with {AUTH_MODE}={chosen} (as set)."
    if chosen == "token":
        return f"Ray: joining {address} with token authentication (RAY_AUTH_TOKEN)."
    return (
        f"Ray: joining {address} without {AUTH_MODE}=token: whoever reaches the cluster's "
        "ports can run code in it. Give every node and every mtdesk process the same "
        "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (docs/security.md)."
    )


def say_once(notice: str) -> None:
    """Print ``notice`` to stderr unless this process already did."""
    if notice not in _said:
        _said.add(notice)
        print(f"mtdesk: {notice}", file=sys.stderr, flush=True)
