"""The composition root: the ``mtdesk`` command, the one place that starts Ray or a server."""
