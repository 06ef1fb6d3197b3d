{{/* Chart name, overridable. */}}
{{- define "model-rollouts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: the release name, with the chart name unless the release already has it. */}}
{{- define "model-rollouts.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "model-rollouts.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "model-rollouts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "model-rollouts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "model-rollouts.labels" -}}
{{ include "model-rollouts.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: model-rollouts
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "model-rollouts.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "model-rollouts.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The controller's ServiceAccount as an RBAC subjects list. */}}
{{- define "model-rollouts.subjects" -}}
- kind: ServiceAccount
  name: {{ include "model-rollouts.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}

{{/* "true" when leader election is on: forced by the value, or "auto" with more than one replica. */}}
{{- define "model-rollouts.leaderElection" -}}
{{- $mode := toString .Values.leaderElection.enabled -}}
{{- if not (has $mode (list "auto" "true" "false")) -}}
{{- fail (printf "leaderElection.enabled must be auto, true or false, not %q" $mode) -}}
{{- end -}}
{{- if or (eq $mode "true") (and (eq $mode "auto") (gt (int .Values.replicaCount) 1)) -}}true{{- end -}}
{{- end -}}

{{- define "model-rollouts.leaseName" -}}
{{- default (printf "%s-leader" (include "model-rollouts.fullname" .)) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "model-rollouts.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace -}}
{{- end -}}

{{/*
The API permissions the controller needs, written once and used by the ClusterRole (cluster-wide
install) or the Role (namespaced install). No wildcards; Secrets and the leader-election Leases are
granted apart, Secrets only when rbac.secrets.enabled, the leader's Lease only in the lease
namespace. The Leases granted here are the KServe router's claims, in the rollouts' namespaces.
*/}}
{{- define "model-rollouts.rules" -}}
- apiGroups: [rollouts.mlops.dev]
  resources: [modelrollouts]
  verbs: [get, list, watch, update, patch]
- apiGroups: [rollouts.mlops.dev]
  resources: [modelrollouts/status]
  verbs: [get, update, patch]
- apiGroups: [rollouts.mlops.dev]
  resources: [modelrollouts/finalizers]
  verbs: [update]
- apiGroups: [rollouts.mlops.dev]
  resources: [analysistemplates]
  verbs: [get, list, watch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, update, patch]
{{- if .Values.rbac.istio.enabled }}
- apiGroups: [networking.istio.io]
  resources: [virtualservices]
  verbs: [get, list, watch, update]
- apiGroups: [networking.istio.io]
  resources: [destinationrules]
  verbs: [get]
{{- end }}
{{- if .Values.rbac.kserve.enabled }}
- apiGroups: [serving.kserve.io]
  resources: [inferenceservices]
  verbs: [get, list, watch, update]
# The KServe router's claim on an InferenceService: a Lease beside it, kserve-<name>.rollouts.mlops.dev
# (its name depends on the InferenceService, so it cannot be listed here).
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update, delete]
{{- end }}
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, patch]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, update, patch]
{{- end -}}

{{- define "model-rollouts.secretRules" -}}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end -}}

{{/* Namespaces where Secrets may be read through a Role; empty means the ClusterRole grants it. */}}
{{- define "model-rollouts.secretNamespaces" -}}
{{- if .Values.rbac.secrets.namespaces -}}
{{- join "," .Values.rbac.secrets.namespaces -}}
{{- else if .Values.watchNamespace -}}
{{- .Values.watchNamespace -}}
{{- end -}}
{{- end -}}

{{/*
The controller Deployments, as YAML {instances: [...]}: one that owns every ModelRollout, or, with
sharding.shards, one per shard (and one for the rollouts without the shard label, with
sharding.unlabelled). Each has: name (of the Deployment), shard ("" when unsharded), selector
(--watch-label-selector), replicas, elect (leader election on) and leaseName.
*/}}
{{- define "model-rollouts.instances" -}}
{{- $fullname := include "model-rollouts.fullname" . -}}
{{- $mode := toString .Values.leaderElection.enabled -}}
{{- $_ := include "model-rollouts.leaderElection" . -}}
{{- $instances := list -}}
{{- if .Values.sharding.shards -}}
{{- $key := required "sharding.key is required with sharding.shards" .Values.sharding.key -}}
{{- $shards := list -}}
{{- if .Values.sharding.unlabelled -}}
{{- $shards = append $shards (dict "name" "unlabelled" "selector" (printf "!%s" $key)) -}}
{{- end -}}
{{- range .Values.sharding.shards -}}
{{- $shards = append $shards . -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $shards -}}
{{- $name := toString (required "every entry of sharding.shards needs a name" .name) -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- fail (printf "sharding.shards: %q is not a valid name (lower-case letters, digits and -)" $name) -}}
{{- end -}}
{{- if hasKey $seen $name -}}
{{- if and (eq $name "unlabelled") $.Values.sharding.unlabelled -}}
{{- fail (printf "sharding.shards: \"unlabelled\" names the Deployment for the rollouts without %s (sharding.unlabelled); choose another name" $key) -}}
{{- end -}}
{{- fail (printf "sharding.shards: %q appears twice" $name) -}}
{{- end -}}
{{- $_ = set $seen $name true -}}
{{- $replicas := int (default $.Values.replicaCount .replicaCount) -}}
{{- $instances = append $instances (dict
      "name" (printf "%s-%s" $fullname $name | trunc 63 | trimSuffix "-")
      "shard" $name
      "selector" (default (printf "%s=%s" $key $name) .selector)
      "replicas" $replicas
      "elect" (or (eq $mode "true") (and (eq $mode "auto") (gt $replicas 1)))
      "leaseName" (default (printf "%s-%s-leader" $fullname $name) .leaseName)) -}}
{{- end -}}
{{- else -}}
{{- $instances = append $instances (dict
      "name" $fullname
      "shard" ""
      "selector" ""
      "replicas" (int .Values.replicaCount)
      "elect" (eq (include "model-rollouts.leaderElection" .) "true")
      "leaseName" (include "model-rollouts.leaseName" .)) -}}
{{- end -}}
{{- toYaml (dict "instances" $instances) -}}
{{- end -}}


{{/* The alert receiver's token Secret: required with alertReceiver.enabled, which sharding cannot serve. */}}
{{- define "model-rollouts.alertReceiverTokenSecret" -}}
{{- if .Values.sharding.shards -}}
{{- fail "alertReceiver.enabled cannot be used with sharding.shards: one Service cannot tell which shard an alert is for" -}}
{{- end -}}
{{- required "alertReceiver.tokenSecret.name is required with alertReceiver.enabled: a Secret holding the token Alertmanager sends" .Values.alertReceiver.tokenSecret.name -}}
{{- end -}}
