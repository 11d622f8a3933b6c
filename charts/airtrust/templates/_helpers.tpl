{{/*
Shared pieces. Every object carries the labels `airtrust render` gives it
(app.kubernetes.io/name and app.kubernetes.io/managed-by=airtrust), nothing
more: tests/integration/test_chart.py compares the chart with render object by
object, and doctor finds the parts by those labels.
*/}}

{{- define "airtrust.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The label selector of the profile's Run:ai project namespaces (runai.toml). */}}
{{- define "airtrust.projectSelector" -}}
runai/queue
{{- end }}

{{/* The CA secret the controller writes in every target (runai.toml [ca_secret]). */}}
{{- define "airtrust.caSecret" -}}
runai-ca-cert
{{- end }}

{{- define "airtrust.source" -}}
{{ .Values.ca.source.kind }}/{{ .Release.Namespace }}/{{ .Values.ca.source.name }}:{{ .Values.ca.source.key }}
{{- end }}

{{/* The namespaces the controller writes the CA secret into by label (may be empty). */}}
{{- define "airtrust.controllerSelector" -}}
{{- if .Values.scope.runaiProjects }}{{ include "airtrust.projectSelector" . }}{{ else }}{{ .Values.scope.selector }}{{ end }}
{{- end }}

{{/* The namespaces whose pods the webhook injects: never empty. */}}
{{- define "airtrust.webhookSelector" -}}
{{- if .Values.scope.runaiProjects }}{{ include "airtrust.projectSelector" . }}{{ else }}{{ .Values.scope.selector | default "airtrust.io/inject=enabled" }}{{ end }}
{{- end }}

{{/*
A LabelSelector from the `-l` text (a=b, a!=b, a, !a; comma-separated), as
plan.manifests.label_selector parses it, narrowed so it never matches the given
namespaces. Call with (dict "text" TEXT "never" LIST).
*/}}
{{- define "airtrust.labelSelector" -}}
{{- $labels := dict }}
{{- $expressions := list }}
{{- range $raw := splitList "," .text }}
{{- $term := trim $raw }}
{{- if $term }}
{{- if contains "!=" $term }}
{{- $kv := splitn "!=" 2 $term }}
{{- $expressions = append $expressions (dict "key" (trim $kv._0) "operator" "NotIn" "values" (list (trim $kv._1))) }}
{{- else if contains "=" $term }}
{{- $kv := splitn "=" 2 $term }}
{{- $_ := set $labels (trim $kv._0) (regexReplaceAll "^=+" (trim $kv._1) "") }}
{{- else if hasPrefix "!" $term }}
{{- $expressions = append $expressions (dict "key" (trimPrefix "!" $term | trim) "operator" "DoesNotExist") }}
{{- else }}
{{- $expressions = append $expressions (dict "key" $term "operator" "Exists") }}
{{- end }}
{{- end }}
{{- end }}
{{- $expressions = append $expressions (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" (.never | uniq | sortAlpha)) }}
{{- $out := dict "matchExpressions" $expressions }}
{{- if $labels }}{{ $_ := set $out "matchLabels" $labels }}{{ end }}
{{- toYaml $out }}
{{- end }}

{{/* The pod and container security of airtrust's own (non-root) pods. */}}
{{- define "airtrust.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "airtrust.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* tolerations and nodeSelector of a part, written only when set (render writes neither). */}}
{{- define "airtrust.placement" -}}
{{- with .tolerations }}
tolerations:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* What the schema cannot say in one line; every part's template includes it. */}}
{{- define "airtrust.checks" -}}
{{- if and .Values.scope.runaiProjects .Values.scope.selector }}
{{- fail "scope.selector and scope.runaiProjects exclude each other: pick one" }}
{{- end }}
{{- end }}

{{/*
Fail the install when a secret the pods mount is missing, naming it and the command that
makes it: without it the pods never start (and under failurePolicy Fail the webhook's
configuration would be registered with no pod to answer). Only when the cluster
answered: `lookup` is empty under `helm template`, `helm lint` and a client dry run,
so kube-system (always there) tells a real cluster from none.
Call with (dict "root" . "tls" BOOL): tls also requires the webhook's serving secret.
*/}}
{{- define "airtrust.requireSecrets" -}}
{{- $root := .root }}
{{- $ns := $root.Release.Namespace }}
{{- if (lookup "v1" "Namespace" "" "kube-system") }}
{{- $source := $root.Values.ca.source }}
{{- if not $source.create }}
{{- $kind := ternary "Secret" "ConfigMap" (eq $source.kind "secret") }}
{{- if not (lookup "v1" $kind $ns $source.name) }}
{{- fail (printf "the CA source %s %s/%s does not exist: run `airtrust apply -c airtrust.yaml` with inject_namespace: %s in the cluster's entry (it writes the CA source and the webhook's serving certificate), or set ca.source.create=true" ($kind | lower) $ns $source.name $ns) }}
{{- end }}
{{- end }}
{{- if and .tls (not (lookup "v1" "Secret" $ns "airtrust-inject-tls")) }}
{{- fail (printf "the webhook's serving certificate secret %s/airtrust-inject-tls does not exist: run `airtrust apply -c airtrust.yaml` with inject_namespace: %s in the cluster's entry, or `airtrust cert issue` and `kubectl -n %s create secret tls airtrust-inject-tls` (see `airtrust render --inject --service`)" $ns $ns $ns) }}
{{- end }}
{{- end }}
{{- end }}
