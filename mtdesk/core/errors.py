"""The error tree of MT Desk.

    MTDeskError                      root; ``retriable`` says whether trying again may help
    ├── ConfigError                  a setting is missing or malformed (names the variable)
    ├── ValidationError              caller input is wrong (names the field) → HTTP 4xx
    ├── NotFound                     → HTTP 404
    │   └── TenantErased             the account is being (or was) erased: nothing more
    │                                is written for it
    ├── Conflict                     clashes with stored state (names the field) → HTTP 409
    ├── Unauthorized                 → HTTP 401
    ├── StoreUnavailable             Redis cannot be reached (retriable) → HTTP 503
    ├── DecryptionError              a ciphertext cannot be opened with the configured keys
    ├── GraphError                   the Graph API refused a call (code, subcode; retriable
    │                                from one table in actors.graph_errors)
    └── ProviderError                an LLM / embedding provider failed (retriable for
                                     timeouts, 429 and 5xx)

Third-party errors are mapped at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class MTDeskError(Exception):
    retriable: bool = False


class ConfigError(MTDeskError):
    """A setting is missing or malformed. ``variable`` names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class ValidationError(MTDeskError):
    """Caller input is wrong. ``field`` names what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(MTDeskError):
    pass


class TenantErased(NotFound):
    """The tenant's account is being (or was) erased: a write for it was refused."""


class Conflict(MTDeskError):
    """The input clashes with what is stored (e.g. an account another tenant connected)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Unauthorized(MTDeskError):
    pass


class StoreUnavailable(MTDeskError):
    retriable = True


class KeyStoreUnavailable(StoreUnavailable):
    """The key store (``MTDESK_KEYSTORE_URL``) does not answer: a data key that is not
    cached cannot be had, so nothing is sealed or opened for that tenant (503, retried)."""


class DecryptionError(MTDeskError):
    pass


class GraphError(MTDeskError):
    """An error answer of the Graph API. ``retriable`` is set per instance from the table."""

    # Parts of a split reply Meta had accepted before this error (set by the sender).
    parts_sent: int = 0

    def __init__(
        self,
        code: int,
        message: str = "",
        *,
        subcode: int | None = None,
        http_status: int = 0,
        retriable: bool = False,
        fbtrace_id: str | None = None,
    ) -> None:
        super().__init__(f"Graph API error {code}: {message}")
        self.code = code
        self.subcode = subcode
        self.http_status = http_status
        self.retriable = retriable
        self.fbtrace_id = fbtrace_id


class ProviderError(MTDeskError):
    def __init__(self, provider: str, message: str, *, retriable: bool = False) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retriable = retriable
