{{/* Names, labels, the checks of the required values, and the executor's environment. */}}
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

{{/* A value that must reach the pod exactly as written. --set gives a string or, for digits, an int64
(which prints back as written: "007" stays a string); a values file gives every number as a
float64, already altered (YAML reads 0123 as 83, 1.10 as 1.1, 12345678 as 1.2345678e+07), so a
number from a values file is refused rather than guessed at. Arguments: (list $value "its.key"). */}}
{{- define "executor.verbatim" -}}
{{- $value := index . 0 -}}
{{- $key := index . 1 -}}
{{- if kindIs "float64" $value -}}
{{- fail (printf "%s was read as the number %v, which may not be what you wrote (YAML reads 0123 as 83 and 1.10 as 1.1): quote it in the values file, or pass it with --set-string %s=<value>" $key $value $key) -}}
{{- end -}}
{{- $value | toString -}}
{{- end -}}

{{/* The pool id: required, and the vocabulary's rule and message (vocabulary/ids.py, POOL_ID_PATTERN
and POOL_ID_RULE; tests/deploy keeps them in step), so that a bad id fails here rather than in a
crash-looping pod. */}}
{{- define "executor.poolId" -}}
{{- $given := required "global.datahub.executor.pool_id is required: the executor pool this deployment serves (--set global.datahub.executor.pool_id=<pool id>)" .Values.global.datahub.executor.pool_id -}}
{{- $pool := include "executor.verbatim" (list $given "global.datahub.executor.pool_id") -}}
{{- if or (not (regexMatch "^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$" $pool)) (hasSuffix "-dlq" $pool) (hasSuffix "-monitors" $pool) -}}
{{- fail (printf "global.datahub.executor.pool_id %q is refused: a pool id is 1-48 letters, digits, '_' or '-', starting with a letter or digit, and not ending in -dlq or -monitors (the names of a pool's other queues)" $pool) -}}
{{- end -}}
{{- $pool -}}
{{- end -}}

{{/* The image: both parts required, as the seed requires image.tag; there is no public registry to
default to, and a default that pulls from nowhere only shows as ImagePullBackOff. */}}
{{- define "executor.image" -}}
{{- $repository := required "image.repository is required: the registry and repository you pushed this project's image to (--set image.repository=<registry>/datahub-remote-executor)" .Values.image.repository -}}
{{- $tag := required "image.tag is required: the executor version to run, the tag you pushed (--set image.tag=<version>)" .Values.image.tag -}}
{{- printf "%s:%s" $repository (include "executor.verbatim" (list $tag "image.tag")) -}}
{{- end -}}

{{/* The GMS URL: required, and one the executor takes at start (executor/settings.py) as nearly as
a regular expression can say it, so that a bad one fails here and not in a crash loop: http(s), a
host (a name, or an IPv6 address in balanced brackets), a port if any from 1 to 65535, its path
ending in /gms, then at most slashes or a query or fragment. The CloudFormation template's
DataHubBaseUrl has the same pattern (deploy/cloudformation/generate.py, GMS_URL). */}}
{{- define "executor.gmsUrl" -}}
{{- $url := required "global.datahub.gms.url is required: DataHub's URL including /gms (--set global.datahub.gms.url=https://<your-company>.acryl.io/gms)" .Values.global.datahub.gms.url -}}
{{- if not (regexMatch `^(?i:https?)://([^/?#\[\]]*@)?([^/?#@:\[\]]+|\[[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\])(:(0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?)?(/[^?#]*)?/gms(/*|[?#].*)$` $url) -}}
{{- fail (printf "global.datahub.gms.url must be an http(s) URL ending in /gms, with a host and a port (if any) from 1 to 65535, e.g. https://<your-company>.acryl.io/gms; got %q" $url) -}}
{{- end -}}
{{- $url -}}
{{- end -}}

{{/*
The environment the chart sets, one entry per variable: `setBy` names the value it comes from
(extraEnvs may not set these again, see deployment.yaml), the rest is the env entry. Every name
is an executor setting (docs/settings.md).
*/}}
{{- define "executor.env" -}}
{{- if hasKey .Values.global.datahub.gms "token" -}}
{{- fail "global.datahub.gms.token is not read: a token in values is stored in clear in the release history. Put it in a Secret (kubectl create secret generic datahub-access-token-secret --from-literal=datahub-access-token-secret-key=<token>) and name it in global.datahub.gms.secretRef / secretKey" -}}
{{- end -}}
DATAHUB_GMS_URL:
  setBy: global.datahub.gms.url
  value: {{ include "executor.gmsUrl" . | quote }}
DATAHUB_GMS_TOKEN:
  setBy: global.datahub.gms.secretRef and global.datahub.gms.secretKey
  valueFrom:
    secretKeyRef:
      name: {{ .Values.global.datahub.gms.secretRef | quote }}
      key: {{ .Values.global.datahub.gms.secretKey | quote }}
DATAHUB_EXECUTOR_POOL_ID:
  setBy: global.datahub.executor.pool_id
  value: {{ include "executor.poolId" . | quote }}
DATAHUB_EXECUTOR_ID:
  setBy: the pod's name, each pod being one executor of the pool
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS:
  setBy: executor.ingestionMaxWorkers
  value: {{ int .Values.executor.ingestionMaxWorkers | toString | quote }}
DATAHUB_EXECUTOR_MONITORS_MAX_WORKERS:
  setBy: executor.monitorsMaxWorkers
  value: {{ int .Values.executor.monitorsMaxWorkers | toString | quote }}
DATAHUB_EXECUTOR_DRAIN_TIMEOUT:
  setBy: executor.drainTimeoutSeconds
  value: {{ int .Values.executor.drainTimeoutSeconds | toString | quote }}
DATAHUB_EXECUTOR_SANDBOX_MODE:
  setBy: sandbox.mode
  value: {{ .Values.sandbox.mode | quote }}
DATAHUB_EXECUTOR_LOG_JSON:
  setBy: executor.logJson
  value: {{ .Values.executor.logJson | toString | quote }}
DATAHUB_EXECUTOR_LOG_LEVEL:
  setBy: executor.logLevel
  value: {{ .Values.executor.logLevel | quote }}
DATAHUB_EXECUTOR_HEALTH_ADDRESS:
  setBy: executor.healthHost and executor.healthPort
  {{- if contains ":" .Values.executor.healthHost }}
  value: {{ printf "[%s]:%d" .Values.executor.healthHost (int .Values.executor.healthPort) | quote }}
  {{- else }}
  value: {{ printf "%s:%d" .Values.executor.healthHost (int .Values.executor.healthPort) | quote }}
  {{- end }}
DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR:
  setBy: executor.fileSecretBaseDir
  value: {{ .Values.executor.fileSecretBaseDir | quote }}
DATAHUB_EXECUTOR_WORK_DIR:
  setBy: the chart (its writable emptyDir is mounted there)
  value: /var/lib/datahub-executor
DATAHUB_EXECUTOR_VENV_CACHE_DIR:
  setBy: the chart (its writable emptyDir is mounted at /var/cache/datahub-executor)
  value: /var/cache/datahub-executor/venvs
{{- end -}}
