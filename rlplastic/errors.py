"""Failures a user can cause or meet, as opposed to bugs.

``train.py`` prints each of these as one ``rlplastic: error: …`` line, without a traceback; anything
else is a bug and is reported as such. Bad configuration values raise ``ValueError`` (the message
names the key and what is allowed); everything that goes wrong while a valid run runs raises
:class:`RunError` or one of its subclasses.
"""

from __future__ import annotations


class RunError(RuntimeError):
    """A run cannot go on; the message says what happened and what to do."""


class CheckpointError(RunError):
    """No checkpoint of the run dir can be trusted (missing, corrupt, unreadable, or not writable)."""


class RunDirBusy(RunError):
    """Another live process holds the run dir's lock."""


class NonFiniteError(RunError):
    """A loss, a parameter or an action became NaN or infinite."""
