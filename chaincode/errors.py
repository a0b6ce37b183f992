"""Errors a contract raises on purpose; their text is what the client sees as the endorsement error.

The contract API turns an exception raised by a transaction function into a status-500 response
whose message is ``str(exc)``, and the failed proposal writes nothing. Messages are therefore one
clear line that says what was wrong and, where it helps, what to do instead.
"""

from __future__ import annotations


class ContractError(Exception):
    """Base class of the errors contracts raise deliberately."""


class ValidationError(ContractError):
    """An argument has the wrong type, length or characters."""


class AccessDenied(ContractError):
    """The caller's identity does not allow the operation."""


class NotFound(ContractError):
    """The requested record does not exist."""


class AlreadyExists(ContractError):
    """A record with the same key already exists."""
