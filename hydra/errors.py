"""One exception tree for what OpenHydra refuses or cannot do, with how each surface reports it.

A ``HydraError`` is an expected failure whose message is meant for a person: the CLI prints it
in one line and exits with ``exit_code``, the HTTP API answers with ``http_status``, a protocol
handler replies with ``protocol_code``. Anything that is not a ``HydraError`` is a bug, and
keeps its traceback. This module sits at the bottom of the layers: it imports nothing."""


class HydraError(Exception):
    exit_code: int = 2
    http_status: int = 500
    protocol_code: str = "internal"  # a ``protocols.errors.ErrorCode`` value
    param: str | None = None  # the request field at fault, when there is one
    api_code: str | None = None  # the HTTP error body's ``code``, for clients to branch on

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message  # what the person (or the remote peer) is told


class ConfigError(HydraError):
    """A flag, setting or local file the user can fix (a bad --layers, an unsafe key file,
    a busy port, a checkpoint of an unsupported model)."""

    http_status = 400


class InvalidRequest(HydraError):
    """A request that cannot be served as asked (an empty prompt, a prompt too long);
    ``param`` names the request field at fault when one is."""

    http_status = 400
    protocol_code = "bad_field"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UnknownModel(InvalidRequest):
    """A model name that is neither an id nor an alias in the catalog."""

    http_status = 404


class Unavailable(HydraError):
    """The network or this machine cannot serve the request now; waiting or adding peers
    may help (no route covers the model, no source for its weights)."""

    http_status = 503


class PeerError(HydraError):
    """A remote peer failed or misbehaved: unreachable, a typed error reply, a broken seal,
    an unsigned key. Callers route around it."""

    http_status = 502
