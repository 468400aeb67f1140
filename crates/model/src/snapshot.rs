//! An immutable, indexed view of every object the translator may look at.
//! Providers build it; translate only reads it.

use std::collections::BTreeMap;

use gateway_api::apis::experimental::{
    gatewayclasses::GatewayClass, gateways::Gateway, grpcroutes::GrpcRoute, httproutes::HttpRoute,
    referencegrants::ReferenceGrant,
};
use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicy;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::crd::KengineInstance;

/// Namespace and name of a namespaced object. Orders by namespace, then name,
/// which is also the spec's tie-breaker order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of<K: kube::Resource>(obj: &K) -> Self {
        ObjectRef::new(
            obj.namespace().unwrap_or_else(|| "default".into()),
            obj.name_any(),
        )
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One object of a kind we read.
#[derive(Debug, Clone)]
pub enum Object {
    GatewayClass(GatewayClass),
    Gateway(Gateway),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
    ReferenceGrant(ReferenceGrant),
    BackendTlsPolicy(BackendTlsPolicy),
    Namespace(Namespace),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Secret(Secret),
    ConfigMap(ConfigMap),
    KengineInstance(KengineInstance),
}

impl Object {
    /// Kind and name: what [`Snapshot::insert`] replaces by. Cluster-scoped
    /// objects have an empty namespace.
    pub fn key(&self) -> (&'static str, ObjectRef) {
        fn cluster<K: kube::Resource>(o: &K) -> ObjectRef {
            ObjectRef::new("", o.name_any())
        }
        match self {
            Object::GatewayClass(o) => ("GatewayClass", cluster(o)),
            Object::Namespace(o) => ("Namespace", cluster(o)),
            Object::Gateway(o) => ("Gateway", ObjectRef::of(o)),
            Object::HttpRoute(o) => ("HTTPRoute", ObjectRef::of(o)),
            Object::GrpcRoute(o) => ("GRPCRoute", ObjectRef::of(o)),
            Object::ReferenceGrant(o) => ("ReferenceGrant", ObjectRef::of(o)),
            Object::BackendTlsPolicy(o) => ("BackendTLSPolicy", ObjectRef::of(o)),
            Object::Service(o) => ("Service", ObjectRef::of(o)),
            Object::EndpointSlice(o) => ("EndpointSlice", ObjectRef::of(o)),
            Object::Secret(o) => ("Secret", ObjectRef::of(o)),
            Object::ConfigMap(o) => ("ConfigMap", ObjectRef::of(o)),
            Object::KengineInstance(o) => (crate::crd::KIND, ObjectRef::of(o)),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub gateway_classes: BTreeMap<String, GatewayClass>,
    pub gateways: BTreeMap<ObjectRef, Gateway>,
    pub http_routes: BTreeMap<ObjectRef, HttpRoute>,
    pub grpc_routes: BTreeMap<ObjectRef, GrpcRoute>,
    pub reference_grants: BTreeMap<ObjectRef, ReferenceGrant>,
    pub backend_tls_policies: BTreeMap<ObjectRef, BackendTlsPolicy>,
    pub namespaces: BTreeMap<String, Namespace>,
    pub services: BTreeMap<ObjectRef, Service>,
    pub endpoint_slices: BTreeMap<ObjectRef, EndpointSlice>,
    pub secrets: BTreeMap<ObjectRef, Secret>,
    pub config_maps: BTreeMap<ObjectRef, ConfigMap>,
    pub kengine_instances: BTreeMap<ObjectRef, KengineInstance>,
}

impl Snapshot {
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut snapshot = Snapshot::default();
        for object in objects {
            snapshot.insert(object);
        }
        snapshot
    }

    /// Adds or replaces an object (of the same [`Object::key`]).
    pub fn insert(&mut self, object: Object) {
        match object {
            Object::GatewayClass(o) => {
                self.gateway_classes.insert(o.name_any(), o);
            }
            Object::Namespace(o) => {
                self.namespaces.insert(o.name_any(), o);
            }
            Object::Gateway(o) => put(&mut self.gateways, o),
            Object::HttpRoute(o) => put(&mut self.http_routes, o),
            Object::GrpcRoute(o) => put(&mut self.grpc_routes, o),
            Object::ReferenceGrant(o) => put(&mut self.reference_grants, o),
            Object::BackendTlsPolicy(o) => put(&mut self.backend_tls_policies, o),
            Object::Service(o) => put(&mut self.services, o),
            Object::EndpointSlice(o) => put(&mut self.endpoint_slices, o),
            Object::Secret(o) => put(&mut self.secrets, o),
            Object::ConfigMap(o) => put(&mut self.config_maps, o),
            Object::KengineInstance(o) => put(&mut self.kengine_instances, o),
        }
    }

    /// Labels of a namespace. A namespace we were not told about has only the
    /// label Kubernetes always sets on it.
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .get(namespace)
            .map(|n| n.labels().clone())
            .unwrap_or_default();
        labels.insert("kubernetes.io/metadata.name".into(), namespace.into());
        labels
    }

    /// The EndpointSlices of a Service, found by their `kubernetes.io/service-name` label.
    pub fn endpoint_slices_of<'a>(
        &'a self,
        service: &'a ObjectRef,
    ) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        self.endpoint_slices.iter().filter_map(move |(key, slice)| {
            (key.namespace == service.namespace
                && slice.labels().get("kubernetes.io/service-name") == Some(&service.name))
            .then_some(slice)
        })
    }
}

fn put<K: kube::Resource>(map: &mut BTreeMap<ObjectRef, K>, obj: K) {
    map.insert(ObjectRef::of(&obj), obj);
}
