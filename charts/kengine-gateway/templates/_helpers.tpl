{{/* The chart name, or nameOverride. */}}
{{- define "kengine-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name: fullnameOverride, else the release name (with the chart
name appended unless the release name contains it). */}}
{{- define "kengine-gateway.fullname" -}}
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

{{- define "kengine-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "kengine-gateway.labels" -}}
helm.sh/chart: {{ include "kengine-gateway.chart" . }}
{{ include "kengine-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: kengine-gateway
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the controller pods. */}}
{{- define "kengine-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kengine-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kengine-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kengine-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kengine-gateway.leaseName" -}}
{{- default (printf "%s-leader" (include "kengine-gateway.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{/* An image reference, repository[:tag][@digest], from (dict "image" IMAGE
"defaultTag" TAG "what" VALUE-PATH): the digest, when set, pins the image and
the tag is only informative. */}}
{{- define "kengine-gateway.imageRef" -}}
{{- $tag := default .defaultTag .image.tag }}
{{- if and $tag .image.digest }}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest }}
{{- else if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else if $tag }}
{{- printf "%s:%s" .image.repository $tag }}
{{- else }}
{{- fail (printf "%s: set tag or digest" .what) }}
{{- end }}
{{- end }}

{{/* The controller image; managed fleets' admin-proxy sidecars run it too. */}}
{{- define "kengine-gateway.image" -}}
{{- include "kengine-gateway.imageRef" (dict "image" .Values.image "defaultTag" .Chart.AppVersion "what" "image") }}
{{- end }}

{{/* The Kengine image of managed fleets whose KengineInstance names none. */}}
{{- define "kengine-gateway.kengineImage" -}}
{{- include "kengine-gateway.imageRef" (dict "image" .Values.managedFleets.kengineImage "defaultTag" "" "what" "managedFleets.kengineImage") }}
{{- end }}

{{/* The controller pods' selector labels as key=value,key=value: the only
clients the NetworkPolicy of each managed fleet admits to the admin port. */}}
{{- define "kengine-gateway.operatorPodLabels" -}}
{{- $pairs := list }}
{{- range splitList "\n" (include "kengine-gateway.selectorLabels" .) }}
{{- $pairs = append $pairs (regexReplaceAll "^([^:]+): " . "${1}=") }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* The namespace of the default KengineInstance. */}}
{{- define "kengine-gateway.instanceNamespace" -}}
{{- default .Release.Namespace .Values.defaultInstance.namespace }}
{{- end }}

{{/* Cross-value checks that a JSON schema cannot express; called from the
Deployment so that every render runs them. */}}
{{- define "kengine-gateway.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled: without it every replica pushes configs and writes status" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled" }}
{{- end }}
{{- if eq (int .Values.metrics.port) (int .Values.controller.healthPort) }}
{{- fail "metrics.port and controller.healthPort must differ" }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and $pdb.enabled (eq (kindIs "invalid" $pdb.maxUnavailable) (kindIs "invalid" $pdb.minAvailable)) }}
{{- fail "podDisruptionBudget: set exactly one of maxUnavailable and minAvailable" }}
{{- end }}
{{- if .Values.defaultInstance.create }}
{{- if and .Values.watchNamespace (ne .Values.watchNamespace (include "kengine-gateway.instanceNamespace" .)) }}
{{- fail "defaultInstance.namespace must be the watched namespace (watchNamespace), or the controller cannot see the instance" }}
{{- end }}
{{- $ext := .Values.defaultInstance.external }}
{{- if not $ext.selector }}
{{- fail "defaultInstance.external.selector: the labels of your Kengine pods are required" }}
{{- end }}
{{- if and (not $ext.allowPlainHttp) (or (not $ext.adminTls.clientCertificateSecret) (not $ext.adminTls.caSecret)) }}
{{- fail "defaultInstance.external.adminTls.clientCertificateSecret and caSecret are required unless allowPlainHttp is true" }}
{{- end }}
{{- end }}
{{- end }}
