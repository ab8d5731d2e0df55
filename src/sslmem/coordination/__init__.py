"""Coordination between processes through the object store: leases and delivery markers.

Used by the workflow (the pipeline's claimed scoring) and the service alike; imports neither.

* :mod:`~sslmem.coordination.conditional_store` -- compare-and-swap on single objects (S3
  conditional requests, or exclusive generation files in a local directory).
* :mod:`~sslmem.coordination.lease` -- leases with clock-independent expiry, generations
  (fencing tokens) and a renewer whose ``fence()`` guards each publishing step.
* :mod:`~sslmem.coordination.settings` -- :class:`~sslmem.coordination.settings.LeaseSettings`.
* :mod:`~sslmem.coordination.deliveries` -- one "first seen" per webhook delivery id, across
  replicas and restarts.
* :mod:`~sslmem.coordination.skew` -- this clock against the object store's.
"""
