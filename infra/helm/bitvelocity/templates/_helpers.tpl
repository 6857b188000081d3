{{/* The chart's name. */}}
{{- define "bitvelocity.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's prefix for every object. */}}
{{- define "bitvelocity.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A unit's SpinApp (and so its Deployment and Service): at most 52
characters, as the operator puts it in the label key
core.spinkube.dev/app.<name>.status. Call with (list $ "unit-name").
*/}}
{{- define "bitvelocity.unitName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "bitvelocity.fullname" $root) (index . 1) | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "bitvelocity.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "bitvelocity.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bitvelocity
{{- end }}

{{/* Labels of the pods of one component of the release; (list $ "component"). */}}
{{- define "bitvelocity.podLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "bitvelocity.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "bitvelocity.runtimeImage" -}}
{{- printf "%s:%s" .Values.images.bv.repository (default .Chart.AppVersion .Values.images.bv.tag) }}
{{- end }}

{{- define "bitvelocity.appImage" -}}
{{- printf "%s:%s" .Values.images.app.repository (default .Chart.AppVersion .Values.images.app.tag) }}
{{- end }}

{{- define "bitvelocity.executorName" -}}
{{- default (printf "%s-bv" (include "bitvelocity.fullname" .)) .Values.executor.name }}
{{- end }}

{{- define "bitvelocity.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bitvelocity.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bitvelocity.secretRef" -}}
valueFrom:
  secretKeyRef:
    name: {{ .name }}
    key: {{ .key }}
    {{- if .optional }}
    optional: true
    {{- end }}
{{- end }}

{{- define "bitvelocity.metricsAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ . | quote }}
prometheus.io/path: /metrics
{{- end }}
