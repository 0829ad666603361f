{{/* Names and labels shared by every template. */}}

{{- define "fmbench.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fmbench.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "fmbench.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fmbench.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fmbench.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fmbench.labels" -}}
helm.sh/chart: {{ include "fmbench.chart" . }}
{{ include "fmbench.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fmbench-k8s
{{- end -}}

{{- define "fmbench.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fmbench.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag or repository@digest */}}
{{- define "fmbench.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches in namespaced mode (a list, as YAML). */}}
{{- define "fmbench.watchedNamespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- toYaml (uniq .Values.watch.namespaces) -}}
{{- else -}}
{{- toYaml (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/* The operator's RBAC rules: the one definition shared with the cluster tests. */}}
{{- define "fmbench.rbacRules" -}}
{{- $rules := .Files.Get "files/operator-rbac-rules.yaml" | fromYaml -}}
{{- if or (not $rules.namespaced) (not $rules.cluster) (not $rules.leaderElection) -}}
{{- fail "files/operator-rbac-rules.yaml must define `namespaced`, `cluster` and `leaderElection` rule lists" -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}

{{/* k=v,k=v for FMBENCH_RUNNER_SA_ANNOTATIONS (sorted: the rendered manifest is stable). */}}
{{- define "fmbench.runnerAnnotations" -}}
{{- $pairs := list -}}
{{- $ann := .Values.runner.serviceAccount.annotations -}}
{{- range $k := keys $ann | sortAlpha -}}
{{- $v := toString (get $ann $k) -}}
{{- if or (contains "," $k) (contains "=" $k) (contains "," $v) (contains "=" $v) -}}
{{- fail (printf "runner.serviceAccount.annotations.%s: keys and values must not contain ',' or '='" $k) -}}
{{- end -}}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* True where the cluster serves the Prometheus Operator's API (and monitoring is on). */}}
{{- define "fmbench.monitoringApi" -}}
{{- if and .Values.monitoring.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") -}}
true
{{- end -}}
{{- end -}}

{{/* Which namespaces the monitors look in: the watched ones, or all in cluster mode. */}}
{{- define "fmbench.monitorNamespaceSelector" -}}
{{- if eq .Values.watch.mode "cluster" -}}
any: true
{{- else -}}
matchNames:
{{ include "fmbench.watchedNamespaces" . }}
{{- end -}}
{{- end -}}

{{/* The load generator pods (master and workers) of every run. */}}
{{- define "fmbench.loadgenSelector" -}}
matchLabels:
  app.kubernetes.io/managed-by: fmbench-k8s
matchExpressions:
  - {key: fmbench.io/component, operator: In, values: [loadgen-master, loadgen-worker]}
{{- end -}}

{{/* Names of imagePullSecrets, comma-separated: the operator gives them to every pod it runs the image in. */}}
{{- define "fmbench.pullSecretNames" -}}
{{- $names := list -}}
{{- range .Values.imagePullSecrets }}{{ $names = append $names .name }}{{ end -}}
{{- join "," $names -}}
{{- end -}}
