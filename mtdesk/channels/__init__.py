"""The three Meta channels, each in its own package: what arrives and what we send.

- :mod:`mtdesk.channels.webhook` — :func:`~mtdesk.channels.webhook.parse_webhook`: a
  webhook body of any channel → normalized events (one decode of the envelope, then
  each channel's ``inbound`` module translates its items).
- :mod:`mtdesk.channels.outbound` — a reply split within the channel's limit and
  rendered as Send API bodies (each channel's ``outbound`` module: limit and body).
- ``messenger/``, ``instagram/``, ``whatsapp/`` — one channel each: ``inbound`` (wire
  types and their translation into :mod:`mtdesk.core.events`) and ``outbound`` (its
  limit and send body).

This package imports :mod:`mtdesk.core` only; the gateway (inbound) and the shards'
sender (outbound) call it.
"""
