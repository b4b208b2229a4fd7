{{/* Names, labels and the checks of the required values. */}}
{{- define "executor.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "executor.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "executor.labels" -}}
{{ include "executor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "executor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "executor.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The pool id, required. */}}
{{- define "executor.poolId" -}}
{{- required "global.datahub.executor.pool_id is required: the executor pool this deployment serves (--set global.datahub.executor.pool_id=<pool>)" .Values.global.datahub.executor.pool_id -}}
{{- end -}}

{{/* The GMS URL, required, ending in /gms as the executor expects. */}}
{{- define "executor.gmsUrl" -}}
{{- $url := required "global.datahub.gms.url is required: DataHub's URL including /gms (--set global.datahub.gms.url=https://<company>.acryl.io/gms)" .Values.global.datahub.gms.url -}}
{{- if not (regexMatch "^https?://[^/]+.*/gms/?$" $url) -}}
{{- fail (printf "global.datahub.gms.url must be an http(s) URL ending in /gms, got %q" $url) -}}
{{- end -}}
{{- $url -}}
{{- end -}}
