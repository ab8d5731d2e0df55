"""The scoring service (``sslmem serve``): webhook intake, leases, settings.

Still being built: this package holds the foundations the HTTP app will stand on --
:mod:`~sslmem.service.settings` (typed configuration), :mod:`~sslmem.service.webhooks` (MLflow
webhook verification and parsing) and :mod:`~sslmem.service.lease` (exactly-once claims in the
object store). Import the submodules directly; this package imports nothing heavy.
"""
