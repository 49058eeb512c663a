"""The one error type of the methods layer, at the bottom so every module may raise it."""


class MethodError(RuntimeError):
    """A method failed in a way a user can act on (NaN features, diverging flow, ...)."""
