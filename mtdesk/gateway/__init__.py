"""The gateway: Meta (and Stripe) webhooks in, normalized events durably queued out.

- :mod:`.routes`: ``setup_gateway(app)`` adds ``GET/POST /webhooks/meta``, ``/healthz``,
  ``/readyz`` (``add_readiness_check``) and ``/metrics``.
- :mod:`.signature`: ``verify_signature(body, header, secrets)`` (X-Hub-Signature-256).
- :mod:`.payload`: ``parse_webhook(body)`` → events, with the channel adapters
  :mod:`.messenger`, :mod:`.instagram`, :mod:`.whatsapp`.
- :mod:`.ingest`: the Redis hand-off (stream entry format in its docstring) and
  :class:`~.ingest.IngestBatcher`; :mod:`.resp` is its lean Redis link.
- :mod:`.metrics`: the Prometheus series.
"""
