"""Kubeflow pipelines composed from :mod:`sslmem.components`."""
