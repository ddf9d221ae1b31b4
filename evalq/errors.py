"""Errors a user can cause; the CLI turns each into one line and exit code 2."""


class UserError(Exception):
    """A problem with the user's input or environment, reported as one clear line."""
