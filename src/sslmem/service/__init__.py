"""The scoring service (``sslmem serve``): every registered encoder version scored and judged.

Modules, one job each: :mod:`~sslmem.service.settings` (typed configuration),
:mod:`~sslmem.service.webhooks` (MLflow webhook verification and parsing),
:mod:`~sslmem.coordination.lease` (exactly-once claims in the object store, used by the
workflow too), :mod:`~sslmem.service.worker` (bounded, de-duplicated job queue),
:mod:`~sslmem.service.reconcile` (periodic pass over the registry), :mod:`~sslmem.service.state`
(the registry as the service reads it), :mod:`~sslmem.service.metrics` (Prometheus),
:mod:`~sslmem.service.core` (the parts wired together) and :mod:`~sslmem.service.app` (HTTP
routes only). The unit of work is the library function
:func:`sslmem.workflow.score_version.score_registered_version`. Import the submodules directly;
this package imports nothing heavy.
"""
