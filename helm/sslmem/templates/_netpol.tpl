{{/*
One NetworkPolicy peer list from a {namespaceSelector, podSelector, cidrs} value:
namespaceSelector null = this namespace only, {} = every namespace; podSelector null = no pod
peer (only the CIDRs). Args: the value.
*/}}
{{- define "sslmem.netpolPeers" -}}
{{- if not (kindIs "invalid" .podSelector) }}
- podSelector:
    {{- toYaml .podSelector | nindent 4 }}
  {{- if not (kindIs "invalid" .namespaceSelector) }}
  namespaceSelector:
    {{- toYaml .namespaceSelector | nindent 4 }}
  {{- end }}
{{- end }}
{{- range .cidrs }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- end }}

{{/* TCP ports of an egress rule. Args: list of port numbers. */}}
{{- define "sslmem.netpolPorts" -}}
{{- range . }}
- port: {{ . }}
  protocol: TCP
{{- end }}
{{- end }}

{{/* Egress rules shared by the service and the hook Job: DNS and MLflow. */}}
{{- define "sslmem.netpolEgressCommon" -}}
{{- $np := .Values.networkPolicy }}
# DNS
- to:
    {{- include "sslmem.netpolPeers" (merge (dict "cidrs" list) $np.egress.dns) | trim | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
# MLflow
- to:
    {{- if .Values.quickstart.enabled }}
    - podSelector:
        matchLabels:
          app.kubernetes.io/instance: {{ .Release.Name }}
          app.kubernetes.io/component: quickstart-mlflow
    {{- else }}
    {{- include "sslmem.netpolPeers" $np.egress.mlflow | trim | nindent 4 }}
    {{- end }}
  ports:
    {{- if .Values.quickstart.enabled }}
    - port: {{ .Values.quickstart.mlflow.port }}
      protocol: TCP
    {{- else }}
    {{- include "sslmem.netpolPorts" $np.egress.mlflow.ports | trim | nindent 4 }}
    {{- end }}
{{- end }}
