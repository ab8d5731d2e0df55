"""``sslmem demo``: the embedded end-to-end job; the same as ``sslmem run`` (``make demo``)."""

from __future__ import annotations

from sslmem.cli.run import add_arguments, run

__all__ = ["add_arguments", "run"]
