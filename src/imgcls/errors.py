"""The one exception type for user mistakes."""


class ImgclsError(Exception):
    """A problem the user can fix; the message names the problem and the fix.

    The CLI prints it on one line and exits with status 2; anything else is a bug and keeps its traceback.
    """
