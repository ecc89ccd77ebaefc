{{/*
Names and labels, in the style of the official NATS and Centrifugo charts.
*/}}
{{- define "gamerelay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gamerelay.fullname" -}}
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

{{/* Name of a role's objects: <fullname>-<role>. Call with (dict "ctx" $ "role" "gateway"). */}}
{{- define "gamerelay.roleName" -}}
{{- printf "%s-%s" (include "gamerelay.fullname" .ctx | trunc 50 | trimSuffix "-") .role }}
{{- end }}

{{- define "gamerelay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gamerelay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gamerelay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gamerelay.labels" -}}
helm.sh/chart: {{ include "gamerelay.chart" . }}
{{ include "gamerelay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gamerelay
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Call with (dict "ctx" $ "role" "gateway"). */}}
{{- define "gamerelay.roleSelectorLabels" -}}
{{ include "gamerelay.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "gamerelay.roleLabels" -}}
{{ include "gamerelay.labels" .ctx }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "gamerelay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gamerelay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gamerelay.image" -}}
{{- $img := .Values.image }}
{{- $repo := $img.repository }}
{{- if $img.registry }}{{ $repo = printf "%s/%s" $img.registry $img.repository }}{{ end }}
{{- if $img.digest }}
{{- printf "%s@%s" $repo $img.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* The Secret holding NATS credentials. */}}
{{- define "gamerelay.natsSecret" -}}
{{- default .Values.secrets.existingSecret .Values.nats.auth.existingSecret }}
{{- end }}

{{/*
Whether the sequencer runs as its own Deployment.
*/}}
{{- define "gamerelay.sequencerDeployment" -}}
{{- if not .Values.gateway.embedSequencer }}true{{ end }}
{{- end }}

{{/*
terminationGracePeriodSeconds of the gateway: it must cover the preStop sleep
and the drain, with time to spare for the process to exit.
*/}}
{{- define "gamerelay.gatewayGrace" -}}
{{- $g := .Values.gateway }}
{{- $min := add $g.preStopSleepSeconds $g.drainTimeoutSeconds }}
{{- if kindIs "invalid" $g.terminationGracePeriodSeconds }}
{{- add $min 10 }}
{{- else if le (int $g.terminationGracePeriodSeconds) (int $min) }}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%v) must exceed preStopSleepSeconds + drainTimeoutSeconds (%v): the kubelet would kill the gateway in the middle of its drain" $g.terminationGracePeriodSeconds $min) }}
{{- else }}
{{- $g.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{- define "gamerelay.sequencerGrace" -}}
{{- $s := .Values.sequencer }}
{{- if kindIs "invalid" $s.terminationGracePeriodSeconds }}
{{- add $s.drainTimeoutSeconds 10 }}
{{- else if le (int $s.terminationGracePeriodSeconds) (int $s.drainTimeoutSeconds) }}
{{- fail (printf "sequencer.terminationGracePeriodSeconds (%v) must exceed sequencer.drainTimeoutSeconds (%v)" $s.terminationGracePeriodSeconds $s.drainTimeoutSeconds) }}
{{- else }}
{{- $s.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
Where a role's secrets are mounted: one read-only projected volume of
Secret keys (secretsDir), read through the flags' -file twins and file
flags. No secret is ever in the environment or in args.
*/}}
{{- define "gamerelay.secretsDir" -}}/etc/gamerelay{{- end }}

{{/*
Environment shared by every role: the log layout, logging and NATS.
Call with (dict "ctx" $ "role" "gateway").
*/}}
{{- define "gamerelay.commonEnv" -}}
{{- $v := .ctx.Values }}
{{- $dir := include "gamerelay.secretsDir" .ctx }}
- name: GAMERELAY_NAMESPACE
  value: {{ $v.log.namespace | quote }}
- name: GAMERELAY_PARTITIONS
  value: {{ $v.log.partitions | int64 | quote }}
- name: GAMERELAY_LOG_FORMAT
  value: {{ $v.logging.format | quote }}
- name: GAMERELAY_LOG_LEVEL
  value: {{ $v.logging.level | quote }}
- name: GAMERELAY_NATS
  value: {{ $v.nats.url | quote }}
{{- if eq $v.nats.auth.mode "password" }}
- name: GAMERELAY_NATS_USER
  value: {{ index $v.nats.auth.users .role | quote }}
- name: GAMERELAY_NATS_PASSWORD_FILE
  value: {{ printf "%s/nats/password" $dir }}
{{- else if eq $v.nats.auth.mode "creds" }}
- name: GAMERELAY_NATS_CREDS
  value: {{ printf "%s/nats/nats.creds" $dir }}
{{- else if eq $v.nats.auth.mode "nkey" }}
- name: GAMERELAY_NATS_NKEY
  value: {{ printf "%s/nats/user.nk" $dir }}
{{- end }}
{{- if $v.nats.tls.enabled }}
- name: GAMERELAY_NATS_TLS_CA
  value: {{ printf "%s/nats-tls/ca.crt" $dir }}
{{- if $v.nats.tls.clientCertificates }}
- name: GAMERELAY_NATS_TLS_CERT
  value: {{ printf "%s/nats-tls/tls.crt" $dir }}
- name: GAMERELAY_NATS_TLS_KEY
  value: {{ printf "%s/nats-tls/tls.key" $dir }}
{{- end }}
{{- end }}
{{- if $v.goMemLimitFromResources }}
- name: GOMEMLIMIT
  valueFrom:
    resourceFieldRef:
      resource: limits.memory
{{- end }}
{{- end }}

{{/* Where the i-th of gateway.tokens.publicKeys is mounted, under secretsDir. */}}
{{- define "gamerelay.tokenPublicKeyPath" -}}
{{- printf "token-public-keys/%d.pem" (int .) }}
{{- end }}

{{/*
The gateway's token flags beyond the secret: --token-public-key entries
(KID=PATH, comma-separated as the environment takes them), after checking
what the gateway would refuse at start.
*/}}
{{- define "gamerelay.tokenPublicKeys" -}}
{{- $dir := include "gamerelay.secretsDir" . }}
{{- $out := list }}
{{- range $i, $k := .Values.gateway.tokens.publicKeys }}
{{- $path := printf "%s/%s" $dir (include "gamerelay.tokenPublicKeyPath" $i) }}
{{- $out = append $out (ternary $path (printf "%s=%s" $k.kid $path) (eq $k.kid "")) }}
{{- end }}
{{- join "," $out }}
{{- end }}

{{/*
Fails on token settings the gateway would refuse at start, so helm says so
before any pod crash-loops.
*/}}
{{- define "gamerelay.checkTokens" -}}
{{- $v := .Values }}
{{- $t := $v.gateway.tokens }}
{{- $secret := $v.secrets.keys.tokenSecret }}
{{- if and (not $secret) (not $v.secrets.keys.tokenKeys) (not $t.publicKeys) (not $t.jwksURL) (not $v.gateway.allowAnonymous) }}
{{- fail "no one could join the gateway: set secrets.keys.tokenSecret, secrets.keys.tokenKeys, gateway.tokens.publicKeys or gateway.tokens.jwksURL, or gateway.allowAnonymous" }}
{{- end }}
{{- if and $v.gateway.allowCreate (not $secret) }}
{{- fail "gateway.allowCreate needs secrets.keys.tokenSecret: create hands out tokens signed with it" }}
{{- end }}
{{- if and $t.secretID (not $secret) }}
{{- fail "gateway.tokens.secretID names the key of secrets.keys.tokenSecret, which is empty" }}
{{- end }}
{{- $kids := dict }}
{{- if $secret }}{{ $_ := set $kids $t.secretID "secrets.keys.tokenSecret" }}{{ end }}
{{- range $i, $k := $t.publicKeys }}
{{- with (get $kids $k.kid) }}
{{- fail (printf "gateway.tokens.publicKeys[%d]: kid %q is taken by %s (kids are unique; \"\" is the key of tokens without kid)" $i $k.kid .) }}
{{- end }}
{{- $_ := set $kids $k.kid (printf "gateway.tokens.publicKeys[%d]" $i) }}
{{- end }}
{{- end }}

{{/*
Whether the gateways see their clients' addresses, so that limits per client
address count players and not the proxy in front: "true" when
gateway.trustedProxies is set (X-Forwarded-For from those proxies names the
client), or when the gateway Service itself keeps client addresses (type
LoadBalancer or NodePort with externalTrafficPolicy Local) and no Ingress
sits in front.
*/}}
{{- define "gamerelay.gatewaySeesClients" -}}
{{- $g := .Values.gateway }}
{{- if $g.trustedProxies }}true
{{- else if and (not $g.ingress.enabled) (has $g.service.type (list "LoadBalancer" "NodePort")) (eq $g.service.externalTrafficPolicy "Local") }}true
{{- end }}
{{- end }}

{{/* A number as a flag takes it: an integer without a decimal point or exponent. */}}
{{- define "gamerelay.number" -}}
{{- if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- end }}

{{/* Sequencer settings: for the sequencer, and for a gateway that embeds it. */}}
{{- define "gamerelay.sequencerEnv" -}}
{{- $s := .Values.sequencer }}
- name: GAMERELAY_REPLICAS
  value: {{ $s.streamReplicas | int64 | quote }}
- name: GAMERELAY_MAX_AGE
  value: {{ $s.maxAge | quote }}
- name: GAMERELAY_MAX_MSGS_PER_GAME
  value: {{ $s.maxMsgsPerGame | int64 | quote }}
- name: GAMERELAY_LEASE_TTL
  value: {{ $s.leaseTTL | quote }}
{{- end }}

{{/*
The Secret keys a role reads, as projected volume sources: what its
flags' files hold. Call with (dict "ctx" $ "role" "gateway").
*/}}
{{- define "gamerelay.secretSources" -}}
{{- $v := .ctx.Values }}
{{- $natsSecret := include "gamerelay.natsSecret" .ctx }}
{{- if eq .role "gateway" }}
{{- $main := $v.secrets.existingSecret }}
{{- $items := dict $main list }}
{{- with $v.secrets.keys.tokenSecret }}
{{- $_ := set $items $main (append (get $items $main) (dict "key" . "path" "secrets/token-secret")) }}
{{- end }}
{{- with $v.secrets.keys.tokenKeys }}
{{- $_ := set $items $main (append (get $items $main) (dict "key" . "path" "secrets/token-keys")) }}
{{- end }}
{{- with $v.secrets.keys.apiKeys }}
{{- $_ := set $items $main (append (get $items $main) (dict "key" . "path" "secrets/api-keys")) }}
{{- end }}
{{- range $i, $k := $v.gateway.tokens.publicKeys }}
{{- $name := default $main $k.secret }}
{{- $_ := set $items $name (append (default list (get $items $name)) (dict "key" $k.key "path" (include "gamerelay.tokenPublicKeyPath" $i))) }}
{{- end }}
{{- range $name := prepend (without (keys $items | sortAlpha) $main) $main }}
{{- with (get $items $name) }}
- secret:
    name: {{ $name }}
    items:
      {{- range . }}
      - key: {{ .key }}
        path: {{ .path }}
      {{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq .role "archiver" }}
- secret:
    name: {{ $v.secrets.existingSecret }}
    items:
      - key: {{ $v.secrets.keys.mongoURI }}
        path: secrets/mongo-uri
{{- with $v.archiver.mongoTLSSecret }}
- secret:
    name: {{ . }}
    items:
      - key: ca.crt
        path: mongo-tls/ca.crt
{{- end }}
{{- end }}
{{- $natsFile := dict "password" (list (printf "nats-%s-password" .role) "nats/password") "creds" (list (printf "nats-%s.creds" .role) "nats/nats.creds") "nkey" (list (printf "nats-%s.nk" .role) "nats/user.nk") }}
{{- with (get $natsFile $v.nats.auth.mode) }}
- secret:
    name: {{ $natsSecret }}
    items:
      - key: {{ index . 0 }}
        path: {{ index . 1 }}
{{- end }}
{{- if $v.nats.tls.enabled }}
- secret:
    name: {{ index $v.nats.tls.secrets .role }}
    items:
      - key: ca.crt
        path: nats-tls/ca.crt
      {{- if $v.nats.tls.clientCertificates }}
      - key: tls.crt
        path: nats-tls/tls.crt
      - key: tls.key
        path: nats-tls/tls.key
      {{- end }}
{{- end }}
{{- end }}

{{/* The secrets volume and its mount, if the role reads any. Call with (dict "ctx" $ "role" "gateway"). */}}
{{- define "gamerelay.secretsVolumeMounts" -}}
{{- if (include "gamerelay.secretSources" .) }}
- name: secrets
  mountPath: {{ include "gamerelay.secretsDir" .ctx }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "gamerelay.secretsVolumes" -}}
{{- with (include "gamerelay.secretSources" .) }}
- name: secrets
  projected:
    # Readable by the pod's group (fsGroup), writable by no one. Kubelet
    # updates the files when the Secrets change; gamerelay reads the NATS
    # password and client certificate again at every connection, the
    # rest at start.
    defaultMode: 0440
    sources:
      {{- . | trim | nindent 6 }}
{{- end }}
{{- end }}

{{/* Probes on the admin port. Call with (dict "p" .Values.<role>.probes). */}}
{{- define "gamerelay.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: {{ .p.startup.periodSeconds }}
  failureThreshold: {{ .p.startup.failureThreshold }}
  timeoutSeconds: {{ .p.startup.timeoutSeconds }}
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: {{ .p.liveness.periodSeconds }}
  failureThreshold: {{ .p.liveness.failureThreshold }}
  timeoutSeconds: {{ .p.liveness.timeoutSeconds }}
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: {{ .p.readiness.periodSeconds }}
  failureThreshold: {{ .p.readiness.failureThreshold }}
  timeoutSeconds: {{ .p.readiness.timeoutSeconds }}
{{- end }}

{{/*
Pod-level settings every role shares. Call with (dict "ctx" $ "role" "gateway" "r" .Values.gateway).
*/}}
{{- define "gamerelay.podSpecCommon" -}}
{{- $v := .ctx.Values }}
serviceAccountName: {{ include "gamerelay.serviceAccountName" .ctx }}
automountServiceAccountToken: {{ $v.automountServiceAccountToken }}
enableServiceLinks: false
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with .r.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .r.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .r.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .r.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $ctx := .ctx }}
{{- $role := .role }}
{{- with .r.topologySpreadConstraints }}
topologySpreadConstraints:
{{- range . }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (include "gamerelay.roleSelectorLabels" (dict "ctx" $ctx "role" $role) | fromYaml)) }}
{{- if not (hasKey $c "matchLabelKeys") }}
{{- $_ := set $c "matchLabelKeys" (list "pod-template-hash") }}
{{- end }}
{{- end }}
  - {{ toYaml $c | nindent 4 | trim }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod annotations. Call with (dict "ctx" $ "r" .Values.gateway "port" 9090). */}}
{{- define "gamerelay.podAnnotations" -}}
{{- $a := dict }}
{{- if .ctx.Values.podScrapeAnnotations }}
{{- $_ := set $a "prometheus.io/scrape" "true" }}
{{- $_ := set $a "prometheus.io/port" (toString .port) }}
{{- $_ := set $a "prometheus.io/path" "/metrics" }}
{{- end }}
{{- $a = merge (deepCopy (default (dict) .r.podAnnotations)) $a }}
{{- with $a }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* PodDisruptionBudget spec body. Call with (dict "ctx" $ "role" "gateway" "pdb" .Values.gateway.podDisruptionBudget). */}}
{{- define "gamerelay.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "gamerelay.roleName" . }}
  labels:
    {{- include "gamerelay.roleLabels" . | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" .pdb.minAvailable) }}
  minAvailable: {{ .pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "gamerelay.roleSelectorLabels" . | nindent 6 }}
{{- end }}
