{{/* Names and labels shared by the fbmarket templates. */}}
{{- define "fbmarket.fullname" -}}
{{- printf "%s-api" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fbmarket.labels" -}}
app.kubernetes.io/name: fbmarket
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: api
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fbmarket.selectorLabels" -}}
app.kubernetes.io/name: fbmarket
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: api
{{- end -}}
