"""The one base class of the errors that mean "the user's input cannot be used", not "the code is wrong".

Every user-facing error of the project (a bad config key, a missing data folder, a corrupt checkpoint,
an unknown model name, ...) derives from :class:`CxrDistillError` *and* from the built-in type it has
always been (``ValueError``, ``KeyError``, ``FileNotFoundError``, ...), so ``except ValueError`` in
user code keeps working. The command line prints these as one line and exits with status 2; every
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class CxrDistillError(Exception):
    """Base of every error caused by the user's input (files, folders, settings), with a message saying the fix."""


class InvalidArgumentError(CxrDistillError, ValueError):
    """An argument of a command or API call outside what it accepts (a count below one, an unknown target)."""
