{{/*
The controller's RBAC: exactly the API calls listed in the code
(src/controller/rbac.rs, API_CALLS), which tests/chart.rs checks against
these rules in several configurations. Change both together.

Reflectors need list and watch (never get); merge patches are patch;
server-side apply is patch, and also create where it may create the object
(the API server checks create then). Discovery
(GET /apis) is allowed to every authenticated user by the built-in
system:discovery role.

RBAC cannot restrict Secrets by type: the controller lists only
kubernetes.io/tls Secrets (a field selector), but the grant covers all Secrets
in scope; set watchNamespace to narrow it.
*/}}
{{- define "kengine-gateway.namespacedRules" -}}
# Watched: Gateway API objects, KengineInstances and what they refer to.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: [gateways, httproutes, grpcroutes, referencegrants, backendtlspolicies]
  verbs: [list, watch]
- apiGroups: ["kengine.khulnasoft.com"]
  resources: [kengineinstances]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [services, pods, secrets, configmaps]
  verbs: [list, watch]
- apiGroups: ["discovery.k8s.io"]
  resources: [endpointslices]
  verbs: [list, watch]
# Status (server-side apply; a merge patch for routes and policies), never the objects.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: [gateways/status, httproutes/status, grpcroutes/status, backendtlspolicies/status]
  verbs: [patch]
- apiGroups: ["kengine.khulnasoft.com"]
  resources: [kengineinstances/status]
  verbs: [patch]
# Warning Events on Gateways when a push fails.
- apiGroups: ["events.k8s.io"]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.managedFleets.enabled }}
# managedFleets.enabled: the operator runs the Kengine pods of KengineInstances
# in mode Deployment or DaemonSet. It server-side applies (create, patch) and deletes
# the objects it generates, which are labelled
# app.kubernetes.io/managed-by=kengine-gateway and watched by that label...
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [list, watch, create, patch, delete]
- apiGroups: ["apps"]
  resources: [deployments, daemonsets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: ["policy"]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: ["networking.k8s.io"]
  resources: [networkpolicies]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [create, patch, delete]
# ...writes the admin-TLS Secrets it issues (never deletes them: they go with
# their KengineInstance)...
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, patch]
# ...and creates (server-side apply) and deletes the per-Gateway
# KengineInstances of Gateways whose infrastructure and class name none.
- apiGroups: ["kengine.khulnasoft.com"]
  resources: [kengineinstances]
  verbs: [create, patch, delete]
{{- end }}
{{- end }}
{{- define "kengine-gateway.clusterRules" -}}
- apiGroups: ["gateway.networking.k8s.io"]
  resources: [gatewayclasses]
  verbs: [list, watch]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: [gatewayclasses/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
