{{/* Names */}}

{{- define "tubelens.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's prefix for every object; service objects append "-<service>", so it leaves room for them. */}}
{{- define "tubelens.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* (dict "root" $ "component" "crawler") */}}
{{- define "tubelens.componentName" -}}
{{- printf "%s-%s" (include "tubelens.fullname" .root) .component }}
{{- end }}

{{- define "tubelens.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tubelens.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tubelens.labels" -}}
{{ include "tubelens.selectorLabels" . }}
app.kubernetes.io/part-of: tubelens
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Images: (dict "root" $ "image" "crawler") -> repository:tag[@digest] */}}
{{- define "tubelens.image" -}}
{{- $image := index .root.Values.images .image }}
{{- $ref := printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) }}
{{- if $image.digest }}{{ $ref = printf "%s@%s" $ref $image.digest }}{{ end }}
{{- $ref }}
{{- end }}

{{- define "tubelens.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Security: the same contexts the trainer gives its training Jobs (services/trainer/tubelens/trainer/jobs.py). */}}
{{- define "tubelens.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.runAsUser }}
  runAsGroup: {{ .Values.runAsUser }}
  fsGroup: {{ .Values.runAsUser }}
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{- define "tubelens.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop:
      - ALL
{{- end }}

{{/* What every tubelens container writes goes to /tmp (an emptyDir), as in the training Jobs. */}}
{{- define "tubelens.tmpEnv" -}}
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
{{- end }}

{{/* Kafka and S3 addresses: the bundled servers' Services, else the external endpoints. */}}
{{- define "tubelens.kafkaBootstrap" -}}
{{- if .Values.kafka.broker.enabled }}
{{- printf "%s:9092" (include "tubelens.componentName" (dict "root" . "component" "kafka")) }}
{{- else }}
{{- required "kafka.bootstrap is required when kafka.broker.enabled is false" .Values.kafka.bootstrap }}
{{- end }}
{{- end }}

{{/* The distinct ports of the bootstrap list, one per line. */}}
{{- define "tubelens.kafkaPorts" -}}
{{- $ports := list }}
{{- range splitList "," (include "tubelens.kafkaBootstrap" .) }}
{{- $ports = append $ports (last (splitList ":" (trim .))) }}
{{- end }}
{{- join "\n" (uniq $ports) }}
{{- end }}

{{- define "tubelens.s3Endpoint" -}}
{{- if .Values.s3.minio.enabled }}
{{- printf "%s:9000" (include "tubelens.componentName" (dict "root" . "component" "minio")) }}
{{- else }}
{{- required "s3.endpoint is required when s3.minio.enabled is false" .Values.s3.endpoint }}
{{- end }}
{{- end }}

{{/* The endpoint's port; without one the client uses 443 (secure) or 80. */}}
{{- define "tubelens.s3Port" -}}
{{- $parts := splitList ":" (include "tubelens.s3Endpoint" .) }}
{{- if gt (len $parts) 1 }}{{ last $parts }}{{ else if .Values.s3.secure }}443{{ else }}80{{ end }}
{{- end }}

{{- define "tubelens.s3SecretName" -}}
{{- default (include "tubelens.componentName" (dict "root" . "component" "s3")) .Values.s3.existingSecret }}
{{- end }}

{{- define "tubelens.youtubeSecretName" -}}
{{- default (include "tubelens.componentName" (dict "root" . "component" "youtube")) .Values.youtube.existingSecret }}
{{- end }}

{{/*
A service's ConfigMap data: (dict "root" $ "managed" <the variables the chart wires for it> "env" <its env>
"objects" <whether it stores objects>). The shared settings come first, then the service's own. The chart's own
variables cannot be overridden through env: a port or an address changed there alone would no longer match the
Service or NetworkPolicy built from the same value.
*/}}
{{- define "tubelens.configData" -}}
{{- $root := .root }}
{{- $managed := merge (deepCopy .managed) (dict
  "TUBELENS_LOG_LEVEL" $root.Values.logLevel
  "TUBELENS_METRICS_PORT" $root.Values.metricsPort
  "TUBELENS_KAFKA__BOOTSTRAP" (include "tubelens.kafkaBootstrap" $root)
  "TUBELENS_KAFKA__PARTITIONS" $root.Values.kafka.partitions
  "TUBELENS_KAFKA__MAX_MESSAGE_BYTES" (int64 $root.Values.kafka.maxMessageBytes)
) }}
{{- if .objects }}
{{- $managed = merge $managed (dict
  "TUBELENS_S3__ENDPOINT" (include "tubelens.s3Endpoint" $root)
  "TUBELENS_S3__BUCKET" $root.Values.s3.bucket
  "TUBELENS_S3__SECURE" $root.Values.s3.secure
  "TUBELENS_S3__REGION" $root.Values.s3.region
) }}
{{- else }}
{{- /* A service that stores no objects is given no S3 credentials, and says so to the settings check. */}}
{{- $_ := set $managed "TUBELENS_OBJECTS" "local" }}
{{- end }}
{{- $env := merge (deepCopy (.env | default dict)) (deepCopy $root.Values.env) }}
{{- $data := dict }}
{{- range $key, $value := $env }}
{{- if hasKey $managed $key }}
{{- fail (printf "%s is set by the chart from its values; change that value instead of env" $key) }}
{{- end }}
{{- $_ := set $data $key (toString $value) }}
{{- end }}
{{- range $key, $value := $managed }}
{{- $_ := set $data $key (toString $value) }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/*
NetworkPolicy rules. Egress lists take the root context; each returns YAML list items.
*/}}
{{- define "tubelens.egressDns" -}}
- to:
    {{- toYaml .Values.networkPolicy.dns.peers | nindent 4 }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end }}

{{- define "tubelens.egressKafka" -}}
- ports:
    {{- range splitList "\n" (include "tubelens.kafkaPorts" .) }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- if .Values.kafka.broker.enabled }}
  to:
    - podSelector:
        matchLabels:
          {{- include "tubelens.selectorLabels" (dict "root" . "component" "kafka") | nindent 10 }}
  {{- else if .Values.kafka.peers }}
  to:
    {{- toYaml .Values.kafka.peers | nindent 4 }}
  {{- end }}
{{- end }}

{{- define "tubelens.egressS3" -}}
- ports:
    - protocol: TCP
      port: {{ include "tubelens.s3Port" . }}
  {{- if .Values.s3.minio.enabled }}
  to:
    - podSelector:
        matchLabels:
          {{- include "tubelens.selectorLabels" (dict "root" . "component" "minio") | nindent 10 }}
  {{- else if .Values.s3.peers }}
  to:
    {{- toYaml .Values.s3.peers | nindent 4 }}
  {{- end }}
{{- end }}

{{- define "tubelens.egressInternet" -}}
{{- with .Values.networkPolicy.internet -}}
- to:
    - ipBlock:
        cidr: {{ .cidr }}
        {{- with .except }}
        except:
          {{- toYaml . | nindent 10 }}
        {{- end }}
  ports:
    {{- range .ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end }}
{{- end }}

{{- define "tubelens.ingressMetrics" -}}
- from:
    {{- toYaml .root.Values.networkPolicy.prometheus.peers | nindent 4 }}
  ports:
    {{- range .ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end }}

{{/*
A ServiceMonitor for one service: (dict "root" $ "component" "crawler" "ports" (list "metrics")).
honorLabels: every tubelens metric carries its own `service` label (crawler, embedding, ...), which the operator's
target label of the same name (the Kubernetes Service) would otherwise rename to exported_service.
*/}}
{{- define "tubelens.serviceMonitor" -}}
{{- if .root.Values.metrics.serviceMonitor.enabled }}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "tubelens.componentName" . }}
  labels:
    {{- include "tubelens.labels" . | nindent 4 }}
    {{- with .root.Values.metrics.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "tubelens.selectorLabels" . | nindent 6 }}
  endpoints:
    {{- range .ports }}
    - port: {{ . }}
      path: /metrics
      interval: {{ $.root.Values.metrics.serviceMonitor.interval }}
      honorLabels: true
    {{- end }}
{{- end }}
{{- end }}

{{/* A PodDisruptionBudget for a replicated service: (dict "root" $ "component" "embedding" "pdb" .Values.x.pdb). */}}
{{- define "tubelens.pdb" -}}
{{- if .pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "tubelens.componentName" . }}
  labels:
    {{- include "tubelens.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "tubelens.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{/* An HPA on CPU: (dict "root" $ "component" "predictor" "autoscaling" .Values.predictor.autoscaling). */}}
{{- define "tubelens.hpa" -}}
{{- if .autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "tubelens.componentName" . }}
  labels:
    {{- include "tubelens.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "tubelens.componentName" . }}
  minReplicas: {{ .autoscaling.minReplicas }}
  maxReplicas: {{ .autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end }}

{{/* A ServiceAccount that never mounts an API token (only the trainer's talks to the API, and says so). */}}
{{- define "tubelens.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "tubelens.componentName" . }}
  labels:
    {{- include "tubelens.labels" . | nindent 4 }}
automountServiceAccountToken: {{ .automount | default false }}
{{- end }}

{{/* Pod placement: (dict "values" .Values.<service>). */}}
{{- define "tubelens.placement" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The ConfigMap checksum that rolls a Deployment when its settings change. */}}
{{- define "tubelens.configChecksum" -}}
checksum/config: {{ .data | sha256sum }}
{{- end }}
