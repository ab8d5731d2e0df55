{{/*
Names, labels, the image and the cross-value checks shared by every template.
*/}}

{{/* Chart name, overridable. */}}
{{- define "sslmem.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release name, plus the chart name unless the release name already contains it.
Truncated to 63 characters (DNS label); suffixed names (-mlflow, -webhook-ensure) stay below it.
*/}}
{{- define "sslmem.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value: name-version. */}}
{{- define "sslmem.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "sslmem.labels" -}}
app.kubernetes.io/name: {{ include "sslmem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "sslmem.commonLabels" . }}
{{- end }}

{{/* Labels of every object besides name and instance. */}}
{{- define "sslmem.commonLabels" -}}
helm.sh/chart: {{ include "sslmem.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sslmem
{{- end }}

{{/* Selector labels of the scoring-service pods. */}}
{{- define "sslmem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sslmem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: scoring
{{- end }}

{{/* Selector labels of the webhook hook Job's pods. */}}
{{- define "sslmem.hookSelectorLabels" -}}
app.kubernetes.io/name: {{ include "sslmem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook-ensure
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "sslmem.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sslmem.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The sslmem image: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "sslmem.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* In-cluster host name of the scoring Service. */}}
{{- define "sslmem.serviceHost" -}}
{{- printf "%s.%s.svc" (include "sslmem.fullname" .) .Release.Namespace }}
{{- end }}

{{/* URL MLflow delivers webhooks to. */}}
{{- define "sslmem.webhookUrl" -}}
{{- default (printf "http://%s:%d/v1/webhooks/mlflow" (include "sslmem.serviceHost" .) (int .Values.service.port)) .Values.webhook.ensure.url }}
{{- end }}

{{/* ---- Quick-start names and endpoints ---- */}}
{{- define "sslmem.qs.mlflow" -}}{{ include "sslmem.fullname" . }}-mlflow{{- end }}
{{- define "sslmem.qs.minio" -}}{{ include "sslmem.fullname" . }}-minio{{- end }}
{{- define "sslmem.qs.postgresql" -}}{{ include "sslmem.fullname" . }}-postgresql{{- end }}
{{- define "sslmem.qs.mlflowEncryption" -}}{{ include "sslmem.fullname" . }}-mlflow-encryption{{- end }}

{{/* Effective MLflow tracking URI (the quick-start server, else mlflow.trackingUri). */}}
{{- define "sslmem.mlflowTrackingUri" -}}
{{- if .Values.quickstart.enabled }}
{{- printf "http://%s.%s.svc:%d" (include "sslmem.qs.mlflow" .) .Release.Namespace (int .Values.quickstart.mlflow.port) }}
{{- else }}
{{- .Values.mlflow.trackingUri }}
{{- end }}
{{- end }}

{{/* Effective S3 endpoint host:port. */}}
{{- define "sslmem.s3Endpoint" -}}
{{- if .Values.quickstart.enabled }}
{{- printf "%s.%s.svc:9000" (include "sslmem.qs.minio" .) .Release.Namespace }}
{{- else }}
{{- .Values.s3.endpoint }}
{{- end }}
{{- end }}

{{/* Effective S3 TLS flag ("true"/"false"). */}}
{{- define "sslmem.s3Secure" -}}
{{- if .Values.quickstart.enabled }}false{{ else }}{{ .Values.s3.secure }}{{ end }}
{{- end }}

{{/* Effective object store URI. */}}
{{- define "sslmem.storeUri" -}}
{{- if and .Values.quickstart.enabled (not .Values.store.uri) }}s3://sslmem/store{{ else }}{{ .Values.store.uri }}{{ end }}
{{- end }}

{{/* Effective MLFLOW_S3_ENDPOINT_URL. */}}
{{- define "sslmem.mlflowS3EndpointUrl" -}}
{{- if .Values.quickstart.enabled }}
{{- printf "http://%s" (include "sslmem.s3Endpoint" .) }}
{{- else }}
{{- .Values.mlflow.s3EndpointUrl }}
{{- end }}
{{- end }}

{{/* Secret holding the webhook HMAC secret ("" when none). */}}
{{- define "sslmem.webhookSecretName" -}}
{{- if .Values.webhook.secret.existingSecret }}
{{- .Values.webhook.secret.existingSecret }}
{{- else if .Values.quickstart.enabled }}
{{- include "sslmem.fullname" . }}-webhook
{{- end }}
{{- end }}

{{/* Secret holding the API token ("" when none). */}}
{{- define "sslmem.apiTokenSecretName" -}}
{{- if .Values.apiToken.existingSecret }}
{{- .Values.apiToken.existingSecret }}
{{- else if .Values.quickstart.enabled }}
{{- include "sslmem.fullname" . }}-api-token
{{- end }}
{{- end }}

{{/*
A generated secret value, base64-encoded, stable across upgrades: the value already stored in
the Secret (lookup) if any, else a new random one. Quick-start mode only.
Args: dict "ctx" $ "name" secretName "key" key "length" n
*/}}
{{- define "sslmem.generatedSecret" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- randAlphaNum (int .length) | b64enc }}
{{- end }}
{{- end }}

{{/* A Fernet key (url-safe base64 of 32 random bytes), base64-encoded again for a Secret's data; stable across upgrades. */}}
{{- define "sslmem.generatedFernetKey" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- randAscii 32 | b64enc | replace "+" "-" | replace "/" "_" | b64enc }}
{{- end }}
{{- end }}

{{/*
Mutually exclusive or missing values: fail with a message that names the values and the fix.
Included by every template that depends on them (the first one to render reports).
*/}}
{{- define "sslmem.validate" -}}
{{- $v := .Values }}
{{- if $v.quickstart.enabled }}
{{- if $v.mlflow.trackingUri }}
{{- fail "quickstart.enabled=true brings its own MLflow server: unset mlflow.trackingUri, or set quickstart.enabled=false to use the MLflow at mlflow.trackingUri" }}
{{- end }}
{{- if $v.s3.endpoint }}
{{- fail "quickstart.enabled=true brings its own MinIO: unset s3.endpoint, or set quickstart.enabled=false to use the S3 endpoint at s3.endpoint" }}
{{- end }}
{{- else }}
{{- if not $v.mlflow.trackingUri }}
{{- fail "mlflow.trackingUri is required: give the URL of your MLflow (>= 3.3) server, e.g. http://mlflow.mlflow.svc.cluster.local:5000, or set quickstart.enabled=true for a NOT-for-production stack" }}
{{- end }}
{{- if not $v.store.uri }}
{{- fail "store.uri is required: give the object store root, e.g. s3://sslmem/store, or set quickstart.enabled=true" }}
{{- end }}
{{- if and (hasPrefix "s3://" $v.store.uri) (not $v.s3.endpoint) }}
{{- fail "store.uri is an s3:// URI but s3.endpoint is empty: give the S3 endpoint host:port, e.g. minio.minio.svc.cluster.local:9000" }}
{{- end }}
{{- if and $v.webhook.ensure.enabled (not $v.webhook.secret.existingSecret) }}
{{- fail "webhook.ensure.enabled=true needs the webhook HMAC secret: create a Secret (kubectl create secret generic sslmem-webhook --from-literal=webhook-secret=$(openssl rand -base64 32)) and set webhook.secret.existingSecret=sslmem-webhook, or set webhook.ensure.enabled=false" }}
{{- end }}
{{- end }}
{{- if and $v.podDisruptionBudget.enabled (not (kindIs "invalid" $v.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" $v.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to null)" }}
{{- end }}
{{- if gt (mulf 2.0 (float64 $v.settings.leaseRenewS)) (float64 $v.settings.leaseTtlS) }}
{{- fail (printf "settings.leaseRenewS (%v) must be at most half of settings.leaseTtlS (%v), so one failed renewal does not lose the lease" $v.settings.leaseRenewS $v.settings.leaseTtlS) }}
{{- end }}
{{- end }}

{{/*
Does the cluster serve the Prometheus Operator's KIND? Either form counts: the kind-qualified
"monitoring.coreos.com/v1/ServiceMonitor" or the plain group version "monitoring.coreos.com/v1"
(what the prometheus-community charts check, and what `helm template --api-versions` users
pass). Args: list $ "monitoring.coreos.com/v1/Kind"
*/}}
{{- define "sslmem.hasMonitoringApi" -}}
{{- $ctx := index . 0 }}
{{- $api := index . 1 }}
{{- if or ($ctx.Capabilities.APIVersions.Has $api) ($ctx.Capabilities.APIVersions.Has (dir $api)) }}true{{ end }}
{{- end }}

{{/*
Is a monitoring object rendered? auto: when its API is known to the cluster (or given with
--api-versions, in either form); true: always, but the render fails when the API is unknown
(an install would fail later with "no matches for kind"); false: never.
Args: list $ enabledValue "monitoring.coreos.com/v1/Kind" "values.key"
*/}}
{{- define "sslmem.monitoringEnabled" -}}
{{- $ctx := index . 0 }}
{{- $enabled := index . 1 }}
{{- $api := index . 2 }}
{{- $has := include "sslmem.hasMonitoringApi" (list $ctx $api) }}
{{- if kindIs "bool" $enabled }}
{{- if $enabled }}
{{- if not $has }}
{{- fail (printf "%s=true but the cluster does not serve %s (the Prometheus Operator's CRDs are not installed): install them (e.g. kube-prometheus-stack), set %s=auto or false, or with helm template pass --api-versions %s" (index . 3) $api (index . 3) (dir $api)) }}
{{- end }}true
{{- end }}
{{- else if and (eq (toString $enabled) "auto") $has }}true
{{- end }}
{{- end }}

{{/* Scratch volumes mounted by every sslmem container (the root filesystem is read-only). */}}
{{- define "sslmem.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratch.tmpSizeLimit }}
- name: cache
  emptyDir:
    sizeLimit: {{ .Values.scratch.cacheSizeLimit }}
{{- end }}

{{- define "sslmem.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /var/cache/sslmem
{{- end }}

{{/* Secret with the S3 credentials ("" when none); quick-start generates it under this name. */}}
{{- define "sslmem.s3SecretName" -}}
{{- if .Values.quickstart.enabled }}
{{- default "sslmem-s3" .Values.s3.credentials.existingSecret }}
{{- else }}
{{- .Values.s3.credentials.existingSecret }}
{{- end }}
{{- end }}

{{/* Credentials of the scoring service by Secret reference: MLflow and the object store. */}}
{{- define "sslmem.credentialsEnv" -}}
{{- include "sslmem.mlflowCredentialsEnv" . }}{{ include "sslmem.s3CredentialsEnv" . }}
{{- end }}

{{/* MLflow's basic-auth credentials (the service and the hook Job). */}}
{{- define "sslmem.mlflowCredentialsEnv" -}}
{{- with .Values.mlflow.credentials }}
{{- if .existingSecret }}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .usernameKey }}
      optional: {{ .optional }}
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
      optional: {{ .optional }}
{{- end }}
{{- end }}
{{- end }}

{{/* The object store's credentials (the service only). */}}
{{- define "sslmem.s3CredentialsEnv" -}}
{{- $s3Secret := include "sslmem.s3SecretName" . }}
{{- if $s3Secret }}
{{- with .Values.s3.credentials }}
{{- range $env, $key := dict "SSLMEM_S3_ACCESS_KEY" .accessKeyKey "AWS_ACCESS_KEY_ID" .accessKeyKey "SSLMEM_S3_SECRET_KEY" .secretKeyKey "AWS_SECRET_ACCESS_KEY" .secretKeyKey }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $s3Secret }}
      key: {{ $key }}
      optional: {{ and $.Values.s3.credentials.optional (not $.Values.quickstart.enabled) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Topology spread constraints of the scoring pods: the given ones, each without a labelSelector
getting the chart's selector labels (a hard-coded release name would select nothing under
another), plus a soft spread across nodes (spreadAcrossNodes) unless one on
kubernetes.io/hostname is given. Empty when there is none.
*/}}
{{- define "sslmem.topologySpread" -}}
{{- $selector := include "sslmem.selectorLabels" . | fromYaml }}
{{- $out := list }}
{{- $byHost := false }}
{{- range .Values.topologySpreadConstraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- if eq $c.topologyKey "kubernetes.io/hostname" }}{{ $byHost = true }}{{ end }}
{{- $out = append $out $c }}
{{- end }}
{{- if and .Values.spreadAcrossNodes (not $byHost) }}
{{- $out = append $out (dict "maxSkew" 1 "topologyKey" "kubernetes.io/hostname" "whenUnsatisfiable" "ScheduleAnyway" "labelSelector" (dict "matchLabels" $selector)) }}
{{- end }}
{{- if $out }}
{{- toYaml $out }}
{{- end }}
{{- end }}

{{/*
The hook Job's retry loop (POSIX sh, coreutils timeout: both in the image's Debian base). Args
after $0: the retry window (s), the timeout of one try (s), then the command. Exits 0 on the
first success and also when the window runs out (with a warning): the hook must never fail the
release.
*/}}
{{- define "sslmem.hookRetryScript" -}}
window="$1"; per_try="$2"; shift 2
end=$(( $(date +%s) + window ))
n=1
while :; do
  if timeout "$per_try" "$@"; then exit 0; fi
  if [ $(( $(date +%s) + 10 + per_try )) -gt "$end" ]; then break; fi
  echo "webhook-ensure: try $n failed; retrying in 10 s" >&2
  n=$(( n + 1 ))
  sleep 10
done
echo "WARNING: the MLflow webhook was not registered within ${window} s (is MLflow reachable and configured for webhooks?). The release is not failed: the service's reconcile pass still finds new versions. Fix MLflow, then run helm upgrade again or sslmem webhook ensure by hand (docs/install.md#how-the-webhook-gets-wired)." >&2
exit 0
{{- end }}
