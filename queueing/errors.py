"""The exceptions of the queueing package, under one root."""

from __future__ import annotations


class QueueingError(Exception):
    """Root of every error raised by the queueing package."""


class SealingError(QueueingError):
    """Sealed data could not be opened: wrong key, unknown key id, or tampering."""


class EnvelopeError(QueueingError):
    """A stream entry is not a valid envelope of a known version."""


class QueueUnavailable(QueueingError):
    """Redis did not answer in time or refused the connection."""


class OutcomeUnknown(QueueingError):
    """A group was sent to Redis and what Redis did with it could not be found out in time.

    Not a QueueUnavailable: the registration may be queued, so the door must
    not answer that nothing was stored.
    """
