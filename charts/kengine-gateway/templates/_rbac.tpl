{{/*
What the controller reads and writes in the namespaces it watches. Discovery
(GET /apis) is allowed to every authenticated user by the built-in
system:discovery role. RBAC cannot restrict Secrets by type: the controller
lists only kubernetes.io/tls Secrets (a field selector), but the grant covers
all Secrets in scope; set watchNamespace to narrow it.
*/}}
{{- define "kengine-gateway.namespacedRules" -}}
- apiGroups: ["gateway.networking.k8s.io"]
  resources: [gateways, httproutes, grpcroutes, referencegrants, backendtlspolicies]
  verbs: [get, list, watch]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: [gateways/status, httproutes/status, grpcroutes/status]
  verbs: [update, patch]
- apiGroups: ["kengine.khulnasoft.com"]
  resources: [kengineinstances]
  verbs: [get, list, watch]
- apiGroups: ["kengine.khulnasoft.com"]
  resources: [kengineinstances/status]
  verbs: [update, patch]
- apiGroups: [""]
  resources: [services, pods, secrets, configmaps]
  verbs: [get, list, watch]
- apiGroups: ["discovery.k8s.io"]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: ["events.k8s.io"]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.managedFleets.enabled }}
# managedFleets.enabled: for the operator to come (managed Deployment and
# DaemonSet fleets); the controller does not use these permissions yet.
- apiGroups: ["apps"]
  resources: [deployments, daemonsets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [services, secrets, serviceaccounts]
  verbs: [create, update, patch, delete]
- apiGroups: ["networking.k8s.io"]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: ["policy"]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, update, patch, delete]
{{- end }}
{{- end }}
{{- define "kengine-gateway.clusterRules" -}}
- apiGroups: ["gateway.networking.k8s.io"]
  resources: [gatewayclasses]
  verbs: [get, list, watch]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: [gatewayclasses/status]
  verbs: [update, patch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
{{- end }}
