{{/* Labels of a quick-start component. Args: list $ "component" */}}
{{- define "sslmem.qs.labels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: quickstart-{{ index . 1 }}
{{- end }}

{{/* Hardened container security context of a quick-start container. Args: uid */}}
{{- define "sslmem.qs.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod security context of a quick-start pod. Args: uid */}}
{{- define "sslmem.qs.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Data volume: a PVC when persistence is on, else an emptyDir. Args: list $ "component" size */}}
{{- define "sslmem.qs.dataVolume" -}}
{{- $ctx := index . 0 -}}
- name: data
  {{- if $ctx.Values.quickstart.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "sslmem.fullname" $ctx }}-{{ index . 1 }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}

{{/* The PVC of a component (persistence on). Args: list $ "component" size */}}
{{- define "sslmem.qs.pvc" -}}
{{- $ctx := index . 0 }}
{{- if $ctx.Values.quickstart.persistence.enabled }}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ include "sslmem.fullname" $ctx }}-{{ index . 1 }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "sslmem.qs.labels" (list $ctx (index . 1)) | nindent 4 }}
  annotations:
    "helm.sh/resource-policy": keep
spec:
  accessModes: [ReadWriteOnce]
  {{- with $ctx.Values.quickstart.persistence.storageClass }}
  storageClassName: {{ . }}
  {{- end }}
  resources:
    requests:
      storage: {{ index . 2 }}
{{- end }}
{{- end }}

{{/*
Annotations of a generated quick-start Secret. With persistence on, the PVCs outlive
`helm uninstall` (resource-policy keep), and so must the credentials their data was made with:
PostgreSQL's password is fixed when its data directory is initialised, MLflow's stored webhook
secret is encrypted with the encryption key, MinIO's data belongs to its root user. A reinstall
(same release name and namespace) adopts the kept Secrets and `lookup` reuses their values.
*/}}
{{- define "sslmem.qs.secretAnnotations" -}}
{{- if .Values.quickstart.persistence.enabled }}
annotations:
  "helm.sh/resource-policy": keep
{{- end }}
{{- end }}
