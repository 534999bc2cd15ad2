"""The toolkit's single error type.

Every problem a user can fix (a missing file, a wrong shape, a malformed rubric, ...)
is raised as :class:`NotegradeError` with a message that says what to fix.  The CLI
prints it in one line and exits with status 1; anything else is a bug in notegrade.

Example
-------
>>> from _selfcheck.errors import NotegradeError
>>> try:
...     raise NotegradeError("rubric.toml: item 1.2: unknown check 'foo'")
... except NotegradeError as err:
...     print(err)
rubric.toml: item 1.2: unknown check 'foo'
"""


class NotegradeError(Exception):
    """A problem with the user's input or environment, explained in the message."""
