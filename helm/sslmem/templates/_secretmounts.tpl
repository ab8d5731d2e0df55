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

{{- define "sslmem.secretFileEnv" -}}
{{- include "sslmem.webhookSecretFileEnv" . }}{{ include "sslmem.apiTokenFileEnv" . }}
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
{{- include "sslmem.webhookSecretFileVolume" . }}{{ include "sslmem.apiTokenFileVolume" . }}
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
{{- include "sslmem.webhookSecretFileMount" . }}{{ include "sslmem.apiTokenFileMount" . }}
{{- end }}
