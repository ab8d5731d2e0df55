"""Keep credentials out of messages, logs and tags: redact the userinfo of URIs.

A URI such as ``http://user:password@mlflow:5000`` carries a credential in its userinfo. Every
place that logs, tags, prints or raises with a URI (tracking URIs, store URIs, S3 endpoints,
the Kubeflow Pipelines host) passes it, or the whole message, through :func:`redact` first;
:class:`~sslmem.errors.SSLMemError` redacts its own problem and fix, so no error message can
carry one.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote, urlsplit

#: What replaces a URI's userinfo (user name included: tokens are often passed as the user).
REDACTED = "***"

# scheme://userinfo@ -- userinfo is everything up to the last '@' before the host ends (a '/',
# '?', '#' or whitespace); RFC 3986 forbids '/', '?', '#' and '@' unescaped in userinfo, but
# people do write raw '@' in passwords, so the greedy part runs to the last '@'.
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s@]*(?:@[^/?#\s@]*)*)@"
)


def redact(text: str) -> str:
    """Replace the userinfo of every URI in ``text`` with ``***``.

    Works on a bare URI and on free text holding URIs (an exception message, a log line).

    Args:
        text: Any text.

    Returns:
        ``text`` with each ``scheme://user:password@`` written ``scheme://***@``.

    Examples:
        >>> redact("cannot reach http://alice:s3cret@mlflow:5000/api")
        'cannot reach http://***@mlflow:5000/api'

    """
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)


def split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """Split the credentials off a URI.

    Args:
        uri: A URI, possibly ``scheme://user:password@host/...`` (percent-encoded userinfo).

    Returns:
        ``(uri without userinfo, user, password)``; user and password are ``None`` when absent
        (decoded otherwise).

    """
    if "://" not in uri:
        return uri, None, None
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    clean = parts._replace(netloc=host).geturl()
    return clean, unquote(user), (unquote(password) if colon else None)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts URI userinfo in every record it passes.

    Installed on the handlers of the CLI (:func:`sslmem.cli.main`), so a URI with credentials
    logged by any library (ours already redact) is written as ``scheme://***@host``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the formatted message in place; never drops a record."""
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_logging(logger: logging.Logger | None = None) -> None:
    """Install :class:`RedactingFilter` on every handler of ``logger`` (default: the root)."""
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
