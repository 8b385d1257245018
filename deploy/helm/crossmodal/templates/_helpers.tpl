{{/*
Names, labels and the pieces every workload shares. A "component" below is one of the keys of
crossmodal.components: gateway, encoder-text, encoder-image, encoder-audio, index.
*/}}

{{- define "crossmodal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name prefix of every resource. At most 40 characters: the longest derived name,
<fullname>-index-<n>-<r>, is a pod's hostname and must stay within 63.
*/}}
{{- define "crossmodal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "crossmodal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the pods of one release (no version: selectors are immutable). */}}
{{- define "crossmodal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crossmodal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "crossmodal.labels" -}}
helm.sh/chart: {{ include "crossmodal.chart" . }}
{{ include "crossmodal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: crossmodal
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway") */}}
{{- define "crossmodal.componentSelectorLabels" -}}
{{ include "crossmodal.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "crossmodal.componentLabels" -}}
{{ include "crossmodal.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Selector labels of the pods of one shard: (dict "root" $ "shard" n) */}}
{{- define "crossmodal.shardSelectorLabels" -}}
{{ include "crossmodal.componentSelectorLabels" (dict "root" .root "component" "index") }}
crossmodal.io/shard: {{ .shard | quote }}
{{- end -}}

{{/*
The components, with what differs between them. `values` names the key under .Values, `module`
the console script, `grpcService` the full name checked by the health probes, `envPrefix` the
CROSSMODAL_ prefix of its `settings`.
*/}}
{{- define "crossmodal.components" -}}
gateway:
  values: gateway
  command: crossmodal-gateway
  grpcService: crossmodal.v1.GatewayService
  envPrefix: CROSSMODAL_GATEWAY_
encoder-text:
  values: encoders.text
  command: crossmodal-encoder-text
  grpcService: crossmodal.v1.EncoderService
  envPrefix: CROSSMODAL_ENCODER_
encoder-image:
  values: encoders.image
  command: crossmodal-encoder-image
  grpcService: crossmodal.v1.EncoderService
  envPrefix: CROSSMODAL_ENCODER_
encoder-audio:
  values: encoders.audio
  command: crossmodal-encoder-audio
  grpcService: crossmodal.v1.EncoderService
  envPrefix: CROSSMODAL_ENCODER_
index:
  values: index
  command: crossmodal-index
  grpcService: crossmodal.v1.IndexService
  envPrefix: CROSSMODAL_INDEX_
{{- end -}}

{{/*
The encoder components this release runs, space-separated: text always, image and audio when enabled
(the bundle has those towers). Use: splitList " " (include ... $).
*/}}
{{- define "crossmodal.encoderComponents" -}}
{{- if not (or .Values.encoders.image.enabled .Values.encoders.audio.enabled) -}}
{{- fail "encoders.image.enabled and encoders.audio.enabled are both false: a bundle has a text tower and at least one of image and audio; enable the ones it has" -}}
{{- end -}}
encoder-text{{ if .Values.encoders.image.enabled }} encoder-image{{ end }}{{ if .Values.encoders.audio.enabled }} encoder-audio{{ end }}
{{- end -}}

{{/* The values of one component, as a dict: (dict "root" $ "component" "encoder-text") */}}
{{- define "crossmodal.componentValues" -}}
{{- $spec := get (include "crossmodal.components" . | fromYaml) .component -}}
{{- $v := .root.Values -}}
{{- range splitList "." $spec.values -}}
{{- $v = get $v . -}}
{{- end -}}
{{- toYaml $v -}}
{{- end -}}

{{- define "crossmodal.componentName" -}}
{{- printf "%s-%s" (include "crossmodal.fullname" .root) .component -}}
{{- end -}}

{{/* Name of shard n's StatefulSet and headless Service: (dict "root" $ "shard" n) */}}
{{- define "crossmodal.shardName" -}}
{{- printf "%s-index-%d" (include "crossmodal.fullname" .root) (int .shard) -}}
{{- end -}}

{{/* Stable DNS name of replica r of shard n: (dict "root" $ "shard" n "replica" r) */}}
{{- define "crossmodal.shardReplicaHost" -}}
{{- $sts := include "crossmodal.shardName" . -}}
{{- printf "%s-%d.%s.%s.svc.%s" $sts (int .replica) $sts .root.Release.Namespace .root.Values.clusterDomain -}}
{{- end -}}

{{/*
CROSSMODAL_GATEWAY_SHARDS, built from index.shards and index.replicas, the same numbers that
size the StatefulSets: shards separated by ";", the replicas of a shard by ",".
*/}}
{{- define "crossmodal.shardMap" -}}
{{- $root := . -}}
{{- $shards := list -}}
{{- range $n := until (int .Values.index.shards) -}}
{{- $replicas := list -}}
{{- range $r := until (int $root.Values.index.replicas) -}}
{{- $host := include "crossmodal.shardReplicaHost" (dict "root" $root "shard" $n "replica" $r) -}}
{{- $replicas = append $replicas (printf "%s:%d" $host (int $root.Values.index.port)) -}}
{{- end -}}
{{- $shards = append $shards (join "," $replicas) -}}
{{- end -}}
{{- join ";" $shards -}}
{{- end -}}

{{/* Address the gateway dials for an encoder: (dict "root" $ "component" "encoder-text") */}}
{{- define "crossmodal.encoderAddress" -}}
{{- $c := include "crossmodal.componentValues" . | fromYaml -}}
{{- printf "%s.%s.svc.%s:%d" (include "crossmodal.componentName" .) .root.Release.Namespace .root.Values.clusterDomain (int $c.port) -}}
{{- end -}}

{{- define "crossmodal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "crossmodal.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image of a component: (dict "root" $ "gpu" bool) */}}
{{- define "crossmodal.image" -}}
{{- $img := .root.Values.image -}}
{{- $repo := printf "%s/%s" $img.registry $img.repository | trimPrefix "/" -}}
{{- $tag := default .root.Chart.AppVersion $img.tag -}}
{{- if .gpu -}}
{{- printf "%s:%s%s" $repo $tag $img.cudaTagSuffix -}}
{{- else if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{- define "crossmodal.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "crossmodal.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{- define "crossmodal.apiKeysSecretName" -}}
{{- default (printf "%s-api-keys" (include "crossmodal.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "crossmodal.authEnabled" -}}
{{- if or .Values.auth.apiKeys .Values.auth.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "crossmodal.isEncoder" -}}
{{- if hasPrefix "encoder-" . -}}true{{- end -}}
{{- end -}}

{{/* Pod's termination grace period: preStop sleep + drain + the component's flush time. */}}
{{- define "crossmodal.terminationGracePeriod" -}}
{{- $c := include "crossmodal.componentValues" . | fromYaml -}}
{{- add (int .root.Values.drain.preStopSleepSeconds) (int (ceil .root.Values.drain.graceSeconds)) (int $c.flushSeconds) -}}
{{- end -}}

{{- define "crossmodal.tlsDir" -}}/etc/crossmodal/tls{{- end -}}
{{- define "crossmodal.modelDir" -}}/models{{- end -}}

{{/* Where the encoders find the bundle, by model.source. */}}
{{- define "crossmodal.bundlePath" -}}
{{- $m := .Values.model -}}
{{- if eq $m.source "pvc" -}}
{{- printf "%s/%s" (include "crossmodal.modelDir" .) $m.pvc.subPath | trimSuffix "/" -}}
{{- else if eq $m.source "init" -}}
{{- printf "%s/bundle" (include "crossmodal.modelDir" .) -}}
{{- else -}}
{{- $m.imagePath -}}
{{- end -}}
{{- end -}}

{{/*
A value as an environment string. Helm parses numbers as floats: print whole ones as integers
(67108864, not 6.7108864e+07) and keep fractions (2.5).
*/}}
{{- define "crossmodal.envValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 .) (floor .)) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/*
The ConfigMap data (CROSSMODAL_* variables) of one component: (dict "root" $ "component" "index").
Also hashed into the pods' checksum/config annotation, so pods roll when it changes.
*/}}
{{- define "crossmodal.configData" -}}
{{- $root := .root -}}
{{- $spec := get (include "crossmodal.components" . | fromYaml) .component -}}
{{- $c := include "crossmodal.componentValues" . | fromYaml -}}
{{- $env := dict -}}
{{- $_ := set $env "CROSSMODAL_HOST" "0.0.0.0" -}}
{{- $_ := set $env "CROSSMODAL_PORT" (include "crossmodal.envValue" $c.port) -}}
{{- $_ := set $env "CROSSMODAL_METRICS_PORT" (include "crossmodal.envValue" $c.metricsPort) -}}
{{- $_ := set $env "CROSSMODAL_LOG_LEVEL" $root.Values.config.logLevel -}}
{{- $_ := set $env "CROSSMODAL_LOG_FORMAT" $root.Values.config.logFormat -}}
{{- $_ := set $env "CROSSMODAL_GRACE_SECONDS" (include "crossmodal.envValue" $root.Values.drain.graceSeconds) -}}
{{- $_ := set $env "CROSSMODAL_MAX_MESSAGE_BYTES" (include "crossmodal.envValue" $root.Values.config.maxMessageBytes) -}}
{{- range $k, $v := ($root.Values.config.limits | default dict) -}}
{{- $_ := set $env (printf "CROSSMODAL_%s" ($k | snakecase | upper)) (include "crossmodal.envValue" $v) -}}
{{- end -}}
{{- range $k, $v := ($c.settings | default dict) -}}
{{- $_ := set $env (printf "%s%s" $spec.envPrefix ($k | snakecase | upper)) (include "crossmodal.envValue" $v) -}}
{{- end -}}
{{- $tls := include "crossmodal.tlsDir" $root -}}
{{- if $root.Values.tls.enabled -}}
{{- $_ := set $env "CROSSMODAL_TLS_CERT_FILE" (printf "%s/tls.crt" $tls) -}}
{{- $_ := set $env "CROSSMODAL_TLS_KEY_FILE" (printf "%s/tls.key" $tls) -}}
{{- if and $root.Values.tls.mutual (ne .component "gateway") -}}
{{- $_ := set $env "CROSSMODAL_TLS_CLIENT_CA_FILE" (printf "%s/ca.crt" $tls) -}}
{{- end -}}
{{- end -}}
{{- if eq .component "gateway" -}}
{{- $_ := set $env "CROSSMODAL_GATEWAY_SHARDS" (include "crossmodal.shardMap" $root) -}}
{{- $_ := set $env "CROSSMODAL_GATEWAY_TEXT_ENCODERS" (include "crossmodal.encoderAddress" (dict "root" $root "component" "encoder-text")) -}}
{{- /* Empty, not left out, without an image encoder: the gateway's default is a local address. */ -}}
{{- $_ := set $env "CROSSMODAL_GATEWAY_IMAGE_ENCODERS" (ternary (include "crossmodal.encoderAddress" (dict "root" $root "component" "encoder-image")) "" $root.Values.encoders.image.enabled) -}}
{{- if $root.Values.encoders.audio.enabled -}}
{{- $_ := set $env "CROSSMODAL_GATEWAY_AUDIO_ENCODERS" (include "crossmodal.encoderAddress" (dict "root" $root "component" "encoder-audio")) -}}
{{- end -}}
{{- if include "crossmodal.authEnabled" $root -}}
{{- $_ := set $env "CROSSMODAL_GATEWAY_API_KEYS_FILE" "/etc/crossmodal/auth/api-keys" -}}
{{- end -}}
{{- if $root.Values.tls.enabled -}}
{{- $_ := set $env "CROSSMODAL_CLIENT_TLS_CA_FILE" (printf "%s/ca.crt" $tls) -}}
{{- if $root.Values.tls.mutual -}}
{{- $_ := set $env "CROSSMODAL_CLIENT_TLS_CERT_FILE" (printf "%s/tls.crt" $tls) -}}
{{- $_ := set $env "CROSSMODAL_CLIENT_TLS_KEY_FILE" (printf "%s/tls.key" $tls) -}}
{{- end -}}
{{- end -}}
{{- else if eq .component "index" -}}
{{- $_ := set $env "CROSSMODAL_INDEX_DATA_DIR" "/data" -}}
{{- else -}}
{{- $_ := set $env "CROSSMODAL_ENCODER_BUNDLE" (include "crossmodal.bundlePath" $root) -}}
{{- if $c.gpu.enabled -}}
{{- $_ := set $env "CROSSMODAL_ENCODER_PROVIDERS" "cuda,cpu" -}}
{{- else -}}
{{- $_ := set $env "CROSSMODAL_ENCODER_PROVIDERS" "cpu" -}}
{{- end -}}
{{- end -}}
{{- if and (include "crossmodal.logMode" $root) (has .component (list "gateway" "index")) -}}
{{- $_ := set $env "CROSSMODAL_LOG_URL" (include "crossmodal.logUrl" $root) -}}
{{- if eq .component "gateway" -}}
{{- $_ := set $env "CROSSMODAL_GATEWAY_LOG_REPLICAS" (include "crossmodal.envValue" $root.Values.log.replicas) -}}
{{- $_ := set $env "CROSSMODAL_GATEWAY_LOG_PARTITIONS" (include "crossmodal.envValue" $root.Values.log.partitions) -}}
{{- $_ := set $env "CROSSMODAL_GATEWAY_LOG_MAX_BYTES" (include "crossmodal.envValue" $root.Values.log.maxBytes) -}}
{{- end -}}
{{- end -}}
{{- range $k, $v := $root.Values.config.env -}}
{{- $_ := set $env $k (include "crossmodal.envValue" $v) -}}
{{- end -}}
{{- range $k, $v := ($c.env | default dict) -}}
{{- $_ := set $env $k (include "crossmodal.envValue" $v) -}}
{{- end -}}
{{- toYaml $env -}}
{{- end -}}

{{/* Native gRPC probe, or with TLS an exec probe (the kubelet's gRPC probe speaks plaintext only). */}}
{{- define "crossmodal.probeAction" -}}
{{- if .root.Values.tls.enabled -}}
exec:
  command:
    - crossmodal-healthcheck
    - --port={{ .port }}
    - --service={{ .grpcService }}
    - --ca={{ include "crossmodal.tlsDir" .root }}/ca.crt
    - --server-name={{ .serverName }}
    {{- if and .root.Values.tls.mutual .clientCert }}
    - --cert={{ include "crossmodal.tlsDir" .root }}/tls.crt
    - --key={{ include "crossmodal.tlsDir" .root }}/tls.key
    {{- end }}
{{- else -}}
grpc:
  port: {{ .port }}
  service: {{ .grpcService }}
{{- end -}}
{{- end -}}

{{/*
The service container of a component:
(dict "root" $ "component" "index" "serverName" name "extraMounts" list "extraEnv" list)
`serverName` is the name the TLS health probe expects in the server's certificate (${VAR} expanded).
*/}}
{{- define "crossmodal.container" -}}
{{- $root := .root -}}
{{- $spec := get (include "crossmodal.components" . | fromYaml) .component -}}
{{- $c := include "crossmodal.componentValues" . | fromYaml -}}
{{- $gpu := and (hasKey $c "gpu") $c.gpu.enabled -}}
{{- $probe := dict "root" $root "port" (int $c.port) "grpcService" $spec.grpcService "serverName" .serverName "clientCert" (ne .component "gateway") -}}
- name: {{ .component }}
  image: {{ include "crossmodal.image" (dict "root" $root "gpu" $gpu) }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: [{{ $spec.command | quote }}]
  ports:
    - name: grpc
      containerPort: {{ $c.port }}
      protocol: TCP
    - name: metrics
      containerPort: {{ $c.metricsPort }}
      protocol: TCP
  envFrom:
    - configMapRef:
        name: {{ include "crossmodal.componentName" . }}
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    {{- with .extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  startupProbe:
    {{- include "crossmodal.probeAction" $probe | nindent 4 }}
    {{- toYaml $c.probes.startup | nindent 4 }}
  readinessProbe:
    {{- include "crossmodal.probeAction" $probe | nindent 4 }}
    {{- toYaml $c.probes.readiness | nindent 4 }}
  livenessProbe:
    {{- include "crossmodal.probeAction" $probe | nindent 4 }}
    {{- toYaml $c.probes.liveness | nindent 4 }}
  lifecycle:
    preStop:
      # Keep serving while the endpoint removal and the DNS change reach every client; SIGTERM (and
      # the drain, health NOT_SERVING) only follows once this returns.
      exec:
        command: ["sleep", {{ $root.Values.drain.preStopSleepSeconds | quote }}]
  {{- $res := deepCopy $c.resources }}
  {{- if $gpu }}
  {{- $limits := set (default dict $res.limits) $c.gpu.resourceName $c.gpu.count }}
  {{- $_ := set $res "limits" $limits }}
  {{- end }}
  resources:
    {{- toYaml $res | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- if $root.Values.tls.enabled }}
    - name: tls
      mountPath: {{ include "crossmodal.tlsDir" $root }}
      readOnly: true
    {{- end }}
    {{- with .extraMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* Pod-level fields shared by every workload: (dict "root" $ "component" "gateway") */}}
{{- define "crossmodal.podCommon" -}}
{{- $root := .root -}}
{{- $c := include "crossmodal.componentValues" . | fromYaml -}}
serviceAccountName: {{ include "crossmodal.serviceAccountName" $root }}
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: {{ include "crossmodal.terminationGracePeriod" . }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with $c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $tolerations := $c.tolerations | default list }}
{{- if and (hasKey $c "gpu") $c.gpu.enabled }}
{{- $tolerations = append $tolerations (dict "key" $c.gpu.resourceName "operator" "Exists" "effect" "NoSchedule") }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* topologySpreadConstraints with the given selector labels: (dict "spread" list "selector" yaml) */}}
{{- define "crossmodal.topologySpread" -}}
{{- $selector := .selector | fromYaml -}}
{{- with .spread -}}
topologySpreadConstraints:
  {{- range . }}
  - topologyKey: {{ .topologyKey }}
    maxSkew: {{ .maxSkew }}
    whenUnsatisfiable: {{ .whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- toYaml $selector | nindent 8 }}
  {{- end }}
{{- end -}}
{{- end -}}

{{/* Volumes every pod has: /tmp and, with TLS, the certificate secret. */}}
{{- define "crossmodal.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "crossmodal.tlsSecretName" . }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* checksum/config of a component: its ConfigMap and the secrets it mounts. */}}
{{- define "crossmodal.configChecksum" -}}
{{- $parts := list (include "crossmodal.configData" .) -}}
{{- if .root.Values.tls.enabled -}}
{{- $parts = append $parts (printf "%s|%s|%s|%s" .root.Values.tls.existingSecret .root.Values.tls.cert .root.Values.tls.key .root.Values.tls.ca) -}}
{{- end -}}
{{- if eq .component "gateway" -}}
{{- $parts = append $parts (printf "%s|%s" .root.Values.auth.existingSecret (join "\n" .root.Values.auth.apiKeys)) -}}
{{- end -}}
{{- join "\n---\n" $parts | sha256sum -}}
{{- end -}}

{{/*
The write log (NATS JetStream) that index replicas apply in order: "external" (log.url, an existing
NATS), "internal" (log.enabled: the StatefulSet of templates/log.yaml), or empty (none: direct writes,
one replica per shard only).
*/}}
{{- define "crossmodal.logMode" -}}
{{- if .Values.log.url -}}external{{- else if .Values.log.enabled -}}internal{{- end -}}
{{- end -}}

{{/* Name of the NATS StatefulSet and of its headless Service. */}}
{{- define "crossmodal.logName" -}}
{{- printf "%s-log" (include "crossmodal.fullname" .) -}}
{{- end -}}

{{/* Stable DNS name of NATS pod i: (dict "root" $ "node" i) */}}
{{- define "crossmodal.logHost" -}}
{{- $name := include "crossmodal.logName" .root -}}
{{- printf "%s-%d.%s.%s.svc.%s" $name (int .node) $name .root.Release.Namespace .root.Values.clusterDomain -}}
{{- end -}}

{{/*
CROSSMODAL_LOG_URL: log.url, or every NATS pod by its stable name (a client needs one of them to answer,
and learns the others from it).
*/}}
{{- define "crossmodal.logUrl" -}}
{{- if .Values.log.url -}}
{{- .Values.log.url -}}
{{- else -}}
{{- $root := . -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.log.nats.replicas) -}}
{{- $host := include "crossmodal.logHost" (dict "root" $root "node" $i) -}}
{{- $urls = append $urls (printf "nats://%s:%d" $host (int $root.Values.log.nats.clientPort)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}
{{- end -}}

{{- define "crossmodal.logImage" -}}
{{- $img := .Values.log.nats.image -}}
{{- $repo := printf "%s/%s" $img.registry $img.repository | trimPrefix "/" -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $img.tag -}}
{{- end -}}
{{- end -}}
