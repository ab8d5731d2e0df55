{{/*
One NetworkPolicy peer list from a {namespaceSelector, podSelector, cidrs} value.
podSelector: {} = the chart's default selector for that peer (given here), null = no pod peer
(only the CIDRs), else the selector as given (replacing the default, not merged with it).
namespaceSelector: null = this namespace only, {} = every namespace, unless a default is given
(DNS: kube-system), which {} then means.
Args: dict "value" <value> "pod" <default podSelector> "ns" <default namespaceSelector or nil>
*/}}
{{- define "sslmem.netpolPeers" -}}
{{- $v := .value }}
{{- $pod := $v.podSelector }}
{{- if and (not (kindIs "invalid" $pod)) (empty $pod) }}{{ $pod = .pod }}{{ end }}
{{- $ns := $v.namespaceSelector }}
{{- if and .ns (not (kindIs "invalid" $ns)) (empty $ns) }}{{ $ns = .ns }}{{ end }}
{{- if not (kindIs "invalid" $pod) }}
- podSelector:
    {{- toYaml $pod | nindent 4 }}
  {{- if not (kindIs "invalid" $ns) }}
  namespaceSelector:
    {{- toYaml $ns | nindent 4 }}
  {{- end }}
{{- end }}
{{- range $v.cidrs }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- end }}

{{/* Default peer selectors (used when the value's podSelector is {}). */}}
{{- define "sslmem.netpolDefaults" -}}
mlflow: {matchLabels: {app.kubernetes.io/name: mlflow}}
prometheus: {matchLabels: {app.kubernetes.io/name: prometheus}}
s3: {matchLabels: {app.kubernetes.io/name: minio}}
dns: {matchLabels: {k8s-app: kube-dns}}
dnsNamespace: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
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
{{- $d := include "sslmem.netpolDefaults" . | fromYaml }}
# DNS
- to:
    {{- include "sslmem.netpolPeers" (dict "value" $np.egress.dns "pod" $d.dns "ns" $d.dnsNamespace) | trim | nindent 4 }}
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
    {{- include "sslmem.netpolPeers" (dict "value" $np.egress.mlflow "pod" $d.mlflow) | trim | nindent 4 }}
    {{- end }}
  ports:
    {{- if .Values.quickstart.enabled }}
    - port: {{ .Values.quickstart.mlflow.port }}
      protocol: TCP
    {{- else }}
    {{- include "sslmem.netpolPorts" $np.egress.mlflow.ports | trim | nindent 4 }}
    {{- end }}
{{- end }}
