"""Kubeflow Pipelines components: thin, typed wrappers over the sslmem library, one step each."""
