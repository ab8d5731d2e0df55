"""Submit the memorisation pipeline to a Kubeflow Pipelines server.

Parameters are validated (:meth:`sslmem.pipeline_params.PipelineParams.resolve`) and the
server is probed with bounded retries *before* anything is uploaded, so a typo or an
unreachable host fails in seconds with a message that says what to fix.
"""

import dataclasses
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from sslmem.errors import SSLMemError
from sslmem.pipeline_params import PipelineParams
from sslmem.pipelines.memorization import compile_pipeline
from sslmem.pipelines.platform import PlatformConfig
from sslmem.redaction import redact

HEALTHZ_PATH = "/apis/v2beta1/healthz"


class SubmitError(SSLMemError):
    """The Kubeflow Pipelines server is unreachable or refused the submission."""

    exit_code = 3


@dataclasses.dataclass(frozen=True)
class RetryBounds:
    """How long to keep trying an unreachable server.

    Attributes:
        attempts: Connection attempts (>= 1).
        timeout_s: Connect/read timeout of each attempt.
        backoff_s: Sleep before the second attempt; doubles after each failure.

    """

    attempts: int = 3
    timeout_s: float = 5.0
    backoff_s: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise SubmitError(f"invalid retry bounds {self}", "use attempts >= 1, timeout > 0")

    @property
    def worst_case_s(self) -> float:
        """Upper bound of the time spent on an unreachable host."""
        sleeps = sum(self.backoff_s * 2.0**i for i in range(self.attempts - 1))
        return float(self.attempts * self.timeout_s + sleeps)


@dataclasses.dataclass(frozen=True)
class SubmittedRun:
    """A run created on the server.

    Attributes:
        run_id: The KFP run id.
        url: Link to the run in the KFP UI.
        arguments: The parameters it was submitted with.

    """

    run_id: str
    url: str
    arguments: dict[str, Any]


def _normalise_host(host: str) -> str:
    text = host.strip().rstrip("/")
    if not text.startswith(("http://", "https://")):
        raise SubmitError(
            f"--host {host!r} is not an http(s) URL",
            "pass the KFP API endpoint, e.g. --host http://localhost:8080",
        )
    if redact(text) != text:
        raise SubmitError(
            f"--host {redact(text)!r} carries credentials (user:password@)",
            "remove them from the URL; pass the bearer token in SSLMEM_KFP_TOKEN or "
            "--token-file FILE",
        )
    return text


def resolve_token(token: str | None, token_file: Path | None, env_token: str | None) -> str | None:
    """The KFP bearer token: ``--token``, else ``--token-file``, else ``SSLMEM_KFP_TOKEN``.

    ``--token`` puts the token in the shell history and the process list; the file or the
    environment variable (e.g. from a Kubernetes Secret) do not.

    Args:
        token: The ``--token`` value.
        token_file: A file holding the token (surrounding whitespace is stripped).
        env_token: ``RuntimeSettings.kfp_token`` (``SSLMEM_KFP_TOKEN``), revealed.

    Returns:
        The token, or ``None`` for an unauthenticated server.

    Raises:
        SubmitError: ``token_file`` cannot be read or is empty.

    """
    if token:
        return token
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise SubmitError(
                f"cannot read the token file {token_file}: {reason}",
                "pass a readable UTF-8 file holding the KFP bearer token",
            ) from None  # the cause could quote the file's bytes
        if not text:
            raise SubmitError(f"the token file {token_file} is empty", "write the token into it")
        return text
    return env_token or None


def check_host(host: str, *, token: str | None = None, bounds: RetryBounds | None = None) -> None:
    """Probe the KFP API (``GET /apis/v2beta1/healthz``) with bounded retries.

    Any HTTP answer (even 401/403 from an auth proxy) counts as reachable; only connection
    errors and timeouts are retried.

    Raises:
        SubmitError: No answer after ``bounds.attempts`` tries (at most
            ``bounds.worst_case_s`` seconds).

    """
    import requests

    bounds = bounds or RetryBounds()
    url = _normalise_host(host) + HEALTHZ_PATH
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    last = ""
    for attempt in range(bounds.attempts):
        if attempt:
            time.sleep(bounds.backoff_s * 2 ** (attempt - 1))
        try:
            requests.get(url, headers=headers, timeout=bounds.timeout_s, allow_redirects=False)
            return
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    raise SubmitError(
        f"Kubeflow Pipelines at {host} is unreachable after {bounds.attempts} attempt(s) "
        f"({redact(last)})",
        "check --host (the KFP API endpoint, e.g. kubectl port-forward -n kubeflow "
        "svc/ml-pipeline-ui 8080:80 and --host http://localhost:8080) and your network",
    )


def submit_pipeline(
    params: PipelineParams,
    *,
    host: str,
    experiment: str,
    image: str,
    platform: PlatformConfig | None = None,
    token: str | None = None,
    namespace: str | None = None,
    run_name: str | None = None,
    enable_caching: bool | None = None,
    bounds: RetryBounds | None = None,
) -> SubmittedRun:
    """Validate, compile and submit one pipeline run.

    Args:
        params: Pipeline parameters (resolved here first: invalid ones fail before any request).
        host: KFP API endpoint (``http(s)://...``).
        experiment: KFP experiment name (created if needed).
        image: Runtime image of every step.
        platform: Kubernetes settings of the tasks.
        token: Bearer token for the KFP API (``existing_token``).
        namespace: Kubernetes namespace (multi-user KFP).
        run_name: Run name (default: generated by KFP).
        enable_caching: Override the compiled caching options (``None``: as compiled).
        bounds: Retry bounds of the reachability probe.

    Returns:
        The created run.

    Raises:
        ConfigError: Invalid parameters, image or platform (named).
        SubmitError: The server is unreachable or refused the run.

    """
    params.resolve()
    _normalise_host(host)
    if not experiment.strip():
        raise SubmitError("--experiment must not be empty", "pass a KFP experiment name")
    check_host(host, token=token, bounds=bounds)
    from kfp import Client

    arguments = params.arguments()
    with tempfile.TemporaryDirectory(prefix="sslmem-submit-") as tmp:
        package = compile_pipeline(
            Path(tmp) / "pipeline.yaml",
            image=image,
            platform=platform,
            caching=enable_caching is not False,  # off in nested tasks too, not only top-level
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            try:
                client = Client(host=host, existing_token=token, namespace=namespace or "kubeflow")
                result = client.create_run_from_pipeline_package(
                    str(package),
                    arguments=arguments,
                    run_name=run_name,
                    experiment_name=experiment,
                    namespace=namespace,
                    enable_caching=enable_caching,
                )
            except SSLMemError:
                raise
            except Exception as exc:
                first = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
                raise SubmitError(
                    f"Kubeflow Pipelines at {host} refused the run: {type(exc).__name__}: {first}",
                    "check --token/--namespace and that the server runs KFP >= 2.0",
                ) from exc
    run_id = str(result.run_id)
    return SubmittedRun(
        run_id=run_id, url=f"{host.rstrip('/')}/#/runs/details/{run_id}", arguments=arguments
    )
