"""KFP component: the identity of the code in this image (an input of every cached step)."""


def identify_code() -> str:
    """Name the code that runs the pipeline's steps (never cached).

    Its output is an input of every cacheable step (resolve, split, train, evaluate), so their
    cache keys change whenever the code inside the image changes: an encoder trained by older
    code is never reused. See :func:`sslmem.provenance.code_version`.

    Returns:
        ``<version>+src.<digest of the installed sources>[+image.sha256:<image digest>]``.

    """
    from sslmem.provenance import code_version

    return code_version()
