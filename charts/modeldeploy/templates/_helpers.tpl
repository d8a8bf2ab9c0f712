{{/* Chart name, truncated to a DNS label. */}}
{{- define "modeldeploy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart unless the release name already holds the chart name. */}}
{{- define "modeldeploy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modeldeploy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: stable over upgrades. */}}
{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels of every object besides the selector labels. */}}
{{- define "modeldeploy.commonLabels" -}}
helm.sh/chart: {{ include "modeldeploy.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modeldeploy
{{- end -}}

{{- define "modeldeploy.labels" -}}
{{ include "modeldeploy.selectorLabels" . }}
{{ include "modeldeploy.commonLabels" . }}
{{- end -}}

{{/* Selector labels of the `helm test` objects. Their own component (no other pod carries it), so that neither the
operator's Service nor its NetworkPolicy selects the test pod, and the NetworkPolicy can admit it by them. */}}
{{- define "modeldeploy.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: helm-test
{{- end -}}

{{- define "modeldeploy.testLabels" -}}
{{ include "modeldeploy.testSelectorLabels" . }}
{{ include "modeldeploy.commonLabels" . }}
{{- end -}}

{{- define "modeldeploy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modeldeploy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "modeldeploy.peeringName" -}}
{{- default (include "modeldeploy.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/* Operator image reference: digest wins over tag; the tag defaults to appVersion. */}}
{{- define "modeldeploy.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The operator's permissions, from rbac/rules.yaml (the one list of them). */}}
{{- define "modeldeploy.rules" -}}
{{- .Files.Get "rbac/rules.yaml" | fromYaml | toJson -}}
{{- end -}}

{{/* Fails rendering on value combinations the schema cannot express. */}}
{{- define "modeldeploy.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.peering.enabled) -}}
{{- fail "replicas > 1 needs peering.enabled=true: without kopf peering every replica would handle every object" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled=true" -}}
{{- end -}}
{{- if eq (int .Values.health.port) (int .Values.metrics.port) -}}
{{- fail "health.port and metrics.port must differ" -}}
{{- end -}}
{{- if ne (len .Values.watchNamespaces) (len (uniq .Values.watchNamespaces)) -}}
{{- fail "watchNamespaces must not repeat a namespace" -}}
{{- end -}}
{{- end -}}
