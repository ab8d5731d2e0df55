{{/*
Secret files as volumes, mounts and *_FILE variables: the webhook HMAC secret (the service and
the hook Job) and the API token (the service only: `sslmem webhook ensure` never reads it).
The "sslmem.secretFile*" defines give the service both; the "sslmem.webhookSecretFile*" ones the
webhook secret alone.
*/}}
{{- define "sslmem.webhookSecretFileEnv" -}}
{{- if include "sslmem.webhookSecretName" . }}
- name: SSLMEM_SERVICE_WEBHOOK_SECRET_FILE
  value: /var/run/secrets/sslmem/webhook/webhook-secret
{{- end }}
{{- end }}

{{- define "sslmem.apiTokenFileEnv" -}}
{{- if include "sslmem.apiTokenSecretName" . }}
- name: SSLMEM_SERVICE_API_TOKEN_FILE
  value: /var/run/secrets/sslmem/api-token/api-token
{{- end }}
{{- end }}

{{/*
The previous webhook secret (the service only, when webhook.secret.previous.key is set): an
optional item, so the key may come and go in the Secret during rotations without a restart.
*/}}
{{- define "sslmem.webhookSecretPreviousEnabled" -}}
{{- if and (include "sslmem.webhookSecretName" .) .Values.webhook.secret.previous.key }}true{{ end }}
{{- end }}

{{- define "sslmem.webhookSecretPreviousFileEnv" -}}
{{- if include "sslmem.webhookSecretPreviousEnabled" . }}
- name: SSLMEM_SERVICE_WEBHOOK_SECRET_PREVIOUS_FILE
  value: /var/run/secrets/sslmem/webhook-previous/webhook-secret-previous
{{- end }}
{{- end }}

{{- define "sslmem.webhookSecretPreviousFileVolume" -}}
{{- if include "sslmem.webhookSecretPreviousEnabled" . }}
- name: webhook-secret-previous
  secret:
    secretName: {{ include "sslmem.webhookSecretName" . }}
    defaultMode: 0440
    optional: true
    items:
      - key: {{ .Values.webhook.secret.previous.key }}
        path: webhook-secret-previous
{{- end }}
{{- end }}

{{- define "sslmem.webhookSecretPreviousFileMount" -}}
{{- if include "sslmem.webhookSecretPreviousEnabled" . }}
- name: webhook-secret-previous
  mountPath: /var/run/secrets/sslmem/webhook-previous
  readOnly: true
{{- end }}
{{- end }}

{{- define "sslmem.secretFileEnv" -}}
{{- include "sslmem.webhookSecretFileEnv" . }}{{ include "sslmem.webhookSecretPreviousFileEnv" . }}{{ include "sslmem.apiTokenFileEnv" . }}
{{- end }}

{{- define "sslmem.webhookSecretFileVolume" -}}
{{- with include "sslmem.webhookSecretName" . }}
- name: webhook-secret
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: {{ $.Values.webhook.secret.key }}
        path: webhook-secret
{{- end }}
{{- end }}

{{- define "sslmem.apiTokenFileVolume" -}}
{{- with include "sslmem.apiTokenSecretName" . }}
- name: api-token
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: {{ $.Values.apiToken.key }}
        path: api-token
{{- end }}
{{- end }}

{{- define "sslmem.secretFileVolumes" -}}
{{- include "sslmem.webhookSecretFileVolume" . }}{{ include "sslmem.webhookSecretPreviousFileVolume" . }}{{ include "sslmem.apiTokenFileVolume" . }}
{{- end }}

{{- define "sslmem.webhookSecretFileMount" -}}
{{- if include "sslmem.webhookSecretName" . }}
- name: webhook-secret
  mountPath: /var/run/secrets/sslmem/webhook
  readOnly: true
{{- end }}
{{- end }}

{{- define "sslmem.apiTokenFileMount" -}}
{{- if include "sslmem.apiTokenSecretName" . }}
- name: api-token
  mountPath: /var/run/secrets/sslmem/api-token
  readOnly: true
{{- end }}
{{- end }}

{{- define "sslmem.secretFileMounts" -}}
{{- include "sslmem.webhookSecretFileMount" . }}{{ include "sslmem.webhookSecretPreviousFileMount" . }}{{ include "sslmem.apiTokenFileMount" . }}
{{- end }}
