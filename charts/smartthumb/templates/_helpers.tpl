{{/* Names */}}
{{- define "smartthumb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "smartthumb.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "smartthumb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "smartthumb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "api") */}}
{{- define "smartthumb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "smartthumb.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "smartthumb.componentLabels" -}}
{{ include "smartthumb.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Images */}}
{{- define "smartthumb.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "smartthumb.runnerImage" -}}
{{- printf "%s:%s" .Values.runner.image.repository (default .Chart.AppVersion .Values.runner.image.tag) }}
{{- end }}

{{- define "smartthumb.fallbackImage" -}}
{{- if eq .Values.runner.fallbackImage "runner" }}
{{- include "smartthumb.runnerImage" . }}
{{- else }}
{{- include "smartthumb.image" . }}
{{- end }}
{{- end }}

{{/* The namespaces whose ThumbnailJobs the operator runs (a list; empty: all) */}}
{{- define "smartthumb.watchedNamespaces" -}}
{{- if .Values.operator.watchAllNamespaces }}
{{- list | toJson }}
{{- else }}
{{- default (list .Release.Namespace) .Values.operator.namespaces | uniq | toJson }}
{{- end }}
{{- end }}

{{- define "smartthumb.apiNamespace" -}}
{{- default .Release.Namespace .Values.api.namespace }}
{{- end }}

{{- define "smartthumb.peering" -}}
{{- if or (gt (int .Values.operator.replicas) 1) .Values.operator.peering.enabled }}true{{ end }}
{{- end }}

{{- define "smartthumb.peeringName" -}}
{{- default (include "smartthumb.fullname" .) .Values.operator.peering.name }}
{{- end }}

{{- define "smartthumb.leaseName" -}}
{{- printf "%s-operator" (include "smartthumb.fullname" .) }}
{{- end }}

{{- define "smartthumb.claimName" -}}
{{- default (printf "%s-data" (include "smartthumb.fullname" .)) .Values.storage.volume.existingClaim }}
{{- end }}

{{- define "smartthumb.runnerServiceAccount" -}}
{{- default (printf "%s-runner" (include "smartthumb.fullname" .)) .Values.runner.serviceAccount.name }}
{{- end }}

{{/* true / false / a list of CIDRs, as the settings read it */}}
{{- define "smartthumb.allowPrivate" -}}
{{- if kindIs "slice" . }}{{ join "," . }}{{ else }}{{ . | toString }}{{ end }}
{{- end }}

{{/* The checks no schema can make */}}
{{- define "smartthumb.validate" -}}
{{- if and (eq .Values.storage.type "s3") (not .Values.storage.s3.bucket) }}
{{- fail "storage.type s3 needs storage.s3.bucket" }}
{{- end }}
{{- $watched := include "smartthumb.watchedNamespaces" . | fromJsonArray }}
{{- if and $watched (not (has (include "smartthumb.apiNamespace" .) $watched)) }}
{{- fail (printf "api.namespace %s is not among the operator's namespaces %v: its ThumbnailJobs would never run" (include "smartthumb.apiNamespace" .) $watched) }}
{{- end }}
{{- end }}

{{/* Pod Security "restricted": the pod's and the container's contexts */}}
{{- define "smartthumb.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "smartthumb.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The storage environment both the API and the operator read */}}
{{- define "smartthumb.storageEnv" -}}
- name: SMARTTHUMB_STORAGE
  value: {{ .Values.storage.type | quote }}
{{- if eq .Values.storage.type "volume" }}
- name: SMARTTHUMB_VOLUME_PATH
  value: {{ .Values.storage.mountPath | quote }}
{{- else }}
- name: SMARTTHUMB_S3_BUCKET
  value: {{ .Values.storage.s3.bucket | quote }}
{{- with .Values.storage.s3.endpoint }}
- name: SMARTTHUMB_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: SMARTTHUMB_S3_REGION
  value: {{ .Values.storage.s3.region | quote }}
- name: SMARTTHUMB_S3_URL_EXPIRY_S
  value: {{ .Values.storage.s3.urlExpirySeconds | int64 | quote }}
{{- with .Values.storage.s3.credentials.existingSecret }}
- name: SMARTTHUMB_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.storage.s3.credentials.accessKeyIdKey }}
- name: SMARTTHUMB_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.storage.s3.credentials.secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- end }}

{{/* What the API and the operator both check: webhook addresses, sources */}}
{{- define "smartthumb.guardEnv" -}}
- name: SMARTTHUMB_ALLOW_PRIVATE_WEBHOOKS
  value: {{ include "smartthumb.allowPrivate" .Values.webhooks.allowPrivate | quote }}
- name: SMARTTHUMB_MAX_PIXELS
  value: {{ .Values.sources.maxPixels | int64 | quote }}
- name: SMARTTHUMB_MAX_SOURCE_BYTES
  value: {{ .Values.sources.maxBytes | int64 | quote }}
- name: SMARTTHUMB_SOURCE_TIMEOUT_S
  value: {{ .Values.sources.timeoutSeconds | quote }}
{{- with .Values.sources.allowed }}
- name: SMARTTHUMB_ALLOWED_SOURCES
  value: {{ join "," . | quote }}
{{- end }}
- name: SMARTTHUMB_ALLOW_PRIVATE_SOURCES
  value: {{ include "smartthumb.allowPrivate" .Values.sources.allowPrivate | quote }}
{{- with .Values.publicURL }}
- name: SMARTTHUMB_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "smartthumb.downwardEnv" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}

{{/* The Secret holding the API's bearer tokens; empty when the API serves anyone. */}}
{{- define "smartthumb.apiTokensSecret" -}}
{{- if not .Values.api.allowAnonymous -}}
{{- default (printf "%s-api-tokens" (include "smartthumb.fullname" .)) .Values.api.tokens.existingSecret -}}
{{- end -}}
{{- end -}}
