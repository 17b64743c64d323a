{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "fleetwave.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: <release>-<chart>, or the release alone when it already
contains the chart name.
*/}}
{{- define "fleetwave.fullname" -}}
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

{{- define "fleetwave.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels on every object.
*/}}
{{- define "fleetwave.labels" -}}
helm.sh/chart: {{ include "fleetwave.chart" . }}
{{ include "fleetwave.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | quote }}
app.kubernetes.io/part-of: fleetwave
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the controller's pods; they never change between upgrades.
*/}}
{{- define "fleetwave.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fleetwave.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "fleetwave.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fleetwave.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fleetwave.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "fleetwave.leaseName" -}}
{{- default (printf "%s-leader" (include "fleetwave.fullname" .)) .Values.leaderElection.leaseName | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fleetwave.dataClaimName" -}}
{{- default (printf "%s-data" (include "fleetwave.fullname" .)) .Values.store.sqlite.persistence.existingClaim }}
{{- end }}

{{/*
Does the controller talk to the Kubernetes API? In operator mode always; in standalone mode
never (leader election is an operator feature).
*/}}
{{- define "fleetwave.usesKubernetesAPI" -}}
{{- if eq .Values.mode "operator" }}true{{ end }}
{{- end }}

{{/*
Combinations the values schema cannot express; fail the render with a message that says
what to change.
*/}}
{{- define "fleetwave.validateValues" -}}
{{- if and (gt (int .Values.replicaCount) 1) (eq .Values.store.type "sqlite") }}
{{- fail "replicaCount > 1 needs a shared store: set store.type=postgres (SQLite is one writer on a ReadWriteOnce volume)" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true, or every replica would plan and send commands" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (ne .Values.mode "operator") }}
{{- fail "standalone mode runs one replica; use mode=operator with store.type=postgres to scale out" }}
{{- end }}
{{- if and (eq .Values.store.type "postgres") (not .Values.store.postgres.existingSecret) }}
{{- fail "store.type=postgres needs store.postgres.existingSecret (a Secret with the PostgreSQL URL)" }}
{{- end }}
{{- if and (eq .Values.store.type "postgres") (not .Values.signingKey.existingSecret) }}
{{- fail "store.type=postgres needs signingKey.existingSecret: every replica signs commands with the same key (fleetwave keys generate --out signing-key.pem; kubectl create secret generic fleetwave-signing-key --from-file=signing-key.pem)" }}
{{- end }}
{{- if and (eq .Values.mode "standalone") (not .Values.source.url) }}
{{- fail "mode=standalone needs source.url (the git repository of Rollouts)" }}
{{- end }}
{{- end }}
