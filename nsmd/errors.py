"""Errors the control path raises on purpose; the API maps each to an HTTP status."""


class NsmdError(Exception):
    """Base of the errors a user may see; `str()` is one line saying what failed and why."""

    status = 500

    def to_json(self) -> dict:
        return {"error": one_line(str(self))}


class ValidationError(NsmdError, ValueError):
    """Bad input: names the offending field and what was expected there."""

    status = 400

    def __init__(self, field: str, expected: str, got: object = None, *, detail: str = ""):
        self.field = one_line(field)  # field names may come from the input itself
        self.expected = expected
        self.got = got
        message = detail or f"{self.field or 'input'}: expected {expected}"
        if got is not None and not detail:
            message += f", got {_short(got)}"
        super().__init__(one_line(message))

    def to_json(self) -> dict:
        return {"error": str(self), "field": self.field}


class NotFound(NsmdError, LookupError):
    status = 404


class Conflict(NsmdError):
    status = 409


class PermissionDenied(NsmdError):
    """A caller asked for something a policy does not allow; `policy` names that policy
    (a built-in one such as tokens_chained, or a rule of the --policy file)."""

    status = 403

    def __init__(self, policy: str, reason: str, *, detail: str = ""):
        self.policy = policy
        super().__init__(detail or f"denied by policy {policy}: {reason}")

    def to_json(self) -> dict:
        return {"error": one_line(str(self)), "policy": self.policy}


class SelectionError(NsmdError):
    """No endpoint could serve a request (none matches, or every candidate failed)."""

    status = 503


class DataplaneError(NsmdError):
    """Setting up interfaces or wires failed (netns missing, device busy, ...)."""

    status = 500


def one_line(text: str) -> str:
    """`text` with line breaks and other unprintable characters escaped: an error is one
    line, whatever the input it quotes holds."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
