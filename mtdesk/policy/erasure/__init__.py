"""Erasure: removing a tenant's, a channel's or an end user's data, everywhere.

- :mod:`.jobs`: deletion jobs, what a tenant, an operator or Meta asks for (durable,
  idempotent, audited), and the worker that runs them.
- :mod:`.params`: what a job erases, one Struct per kind.
- :mod:`.sweep`: the erasure itself, key family by key family (:mod:`mtdesk.core.keys`).
- :mod:`.conversations`: erasing conversations, waiting out the replies in flight.
- :mod:`.records`: removing what names an identifier from keys of any type.
- :mod:`.notices`: the notices erasure and retention publish so that memory forgets too.
"""
