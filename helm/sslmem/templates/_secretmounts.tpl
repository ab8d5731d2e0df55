{{/* Secret files (webhook HMAC secret, API token) as volumes, mounts and *_FILE variables. */}}
{{- define "sslmem.secretFileEnv" -}}
{{- if include "sslmem.webhookSecretName" . }}
- name: SSLMEM_SERVICE_WEBHOOK_SECRET_FILE
  value: /var/run/secrets/sslmem/webhook/webhook-secret
{{- end }}
{{- if include "sslmem.apiTokenSecretName" . }}
- name: SSLMEM_SERVICE_API_TOKEN_FILE
  value: /var/run/secrets/sslmem/api-token/api-token
{{- end }}
{{- end }}

{{- define "sslmem.secretFileVolumes" -}}
{{- with include "sslmem.webhookSecretName" . }}
- name: webhook-secret
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: {{ $.Values.webhook.secret.key }}
        path: webhook-secret
{{- end }}
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

{{- define "sslmem.secretFileMounts" -}}
{{- if include "sslmem.webhookSecretName" . }}
- name: webhook-secret
  mountPath: /var/run/secrets/sslmem/webhook
  readOnly: true
{{- end }}
{{- if include "sslmem.apiTokenSecretName" . }}
- name: api-token
  mountPath: /var/run/secrets/sslmem/api-token
  readOnly: true
{{- end }}
{{- end }}
