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
{{- $_ := required "broker.existingSecret is required: a Secret with the controller's broker account (keys broker.usernameKey and broker.passwordKey); fleetwave does not connect to a broker anonymously" .Values.broker.existingSecret }}
{{- if not .Values.mosquitto.enabled }}
{{- $_ := required "broker.url is required: the MQTT broker, mqtts://host:8883 (or mosquitto.enabled=true for the bundled one)" .Values.broker.url }}
{{- end }}
{{- if and (hasPrefix "mqtt://" (include "fleetwave.brokerUrl" .)) (not .Values.broker.allowPlaintext) }}
{{- fail "broker.url is plain mqtt://: the broker password and every command would cross the network unencrypted; use mqtts:// (or set broker.allowPlaintext=true)" }}
{{- end }}
{{- if .Values.mosquitto.enabled }}
{{- $_ := required "mosquitto.enabled needs mosquitto.tls.existingSecret: a kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) for the broker's TLS listener" .Values.mosquitto.tls.existingSecret }}
{{- $_ := required "mosquitto.enabled needs mosquitto.passwordFile.existingSecret: a Secret with the Mosquitto password file (the controller's account and one per device)" .Values.mosquitto.passwordFile.existingSecret }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail "mosquitto.enabled runs one controller replica: the bundled broker binds client ids to user names, so each replica would need its own broker account; use an external broker to scale out" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The broker the controller connects to: broker.url, else the bundled Mosquitto.
*/}}
{{- define "fleetwave.brokerUrl" -}}
{{- if .Values.broker.url }}
{{- .Values.broker.url }}
{{- else if .Values.mosquitto.enabled }}
{{- printf "mqtts://%s.%s.svc:%d" (include "fleetwave.mosquittoName" .) .Release.Namespace (int .Values.mosquitto.service.port) }}
{{- end }}
{{- end }}

{{/*
The broker's TCP port, for the NetworkPolicy: the URL's, else the scheme's default.
*/}}
{{- define "fleetwave.brokerPort" -}}
{{- $url := include "fleetwave.brokerUrl" . }}
{{- $port := regexFind ":[0-9]+$" $url | trimPrefix ":" }}
{{- if $port }}{{ $port }}{{ else if hasPrefix "mqtts://" $url }}8883{{ else }}1883{{ end }}
{{- end }}

{{/*
The Secret holding the broker's CA certificate (broker.tls.caSecret, else the bundled
Mosquitto's TLS Secret) and its key.
*/}}
{{- define "fleetwave.brokerCaSecret" -}}
{{- if .Values.broker.tls.caSecret }}{{ .Values.broker.tls.caSecret }}{{ else if .Values.mosquitto.enabled }}{{ .Values.mosquitto.tls.existingSecret }}{{ end }}
{{- end }}

{{- define "fleetwave.brokerCaKey" -}}
{{- if .Values.broker.tls.caSecret }}{{ .Values.broker.tls.caKey }}{{ else }}ca.crt{{ end }}
{{- end }}

{{- define "fleetwave.mosquittoName" -}}
{{- printf "%s-mosquitto" (include "fleetwave.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the bundled Mosquitto's pods.
*/}}
{{- define "fleetwave.mosquittoSelectorLabels" -}}
app.kubernetes.io/name: {{ include "fleetwave.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: broker
{{- end }}

{{- define "fleetwave.mosquittoLabels" -}}
helm.sh/chart: {{ include "fleetwave.chart" . }}
{{ include "fleetwave.mosquittoSelectorLabels" . }}
app.kubernetes.io/version: {{ .Values.mosquitto.image.tag | trunc 63 | quote }}
app.kubernetes.io/part-of: fleetwave
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
