//! Typed model of the Kengine (Caddy 2.8) JSON config that we emit.
//!
//! Only the parts we generate are modelled. Every map is a `BTreeMap` and
//! every optional field is skipped when empty, so serializing the same value
//! always yields byte-identical JSON.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    #[serde(default)]
    pub apps: Apps,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Admin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<AdminConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdminConfig {
    /// Kengine autosaves every loaded config unless told not to; we are the source of truth.
    pub persist: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Apps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpApp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsApp>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpApp {
    pub servers: BTreeMap<String, Server>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Server {
    pub listen: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Route lists shared by several hosts, reached through the `invoke` handler.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub named_routes: BTreeMap<String, Route>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_connection_policies: Vec<TlsConnectionPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic_https: Option<AutomaticHttps>,
    /// `h1`, `h2`, `h2c`, `h3`; Kengine's default would open UDP for HTTP/3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<String>,
    /// How errors a handler returns (rather than writes) are answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ServerErrors>,
    /// The listeners it serves.
    #[serde(skip)]
    pub provenance: Provenance,
}

/// A server's error routes: run, with the `{http.error.*}` placeholders
/// set, when a handler returns an error; one of them must answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerErrors {
    pub routes: Vec<Route>,
}

/// The Gateway API object, and the part of it, a piece of config was built
/// from: it lets a refused config name the object that caused it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub part: OriginPart,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OriginPart {
    /// An HTTPRoute's rule, by index.
    Rule(usize),
    /// A Gateway's listener, by name.
    Listener(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Origin {
            kind,
            namespace,
            name,
            part,
        } = self;
        match part {
            OriginPart::Rule(i) => write!(f, "{kind} {namespace}/{name} rule {i}"),
            OriginPart::Listener(l) => write!(f, "{kind} {namespace}/{name} listener {l:?}"),
        }
    }
}

/// Where a route or server came from; empty when unknown (e.g. parsed
/// JSON). Not part of the config's value: every provenance compares equal,
/// so configs compare by what Kengine sees.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    origins: Option<Arc<[Origin]>>,
    /// The route, and all it holds, passed [`check::route`](super::check::route)
    /// as built, and nothing was added to it since: translate's
    /// whole-config check skips it ([`check::unchecked_parts`](super::check::unchecked_parts)).
    checked: bool,
}

impl Provenance {
    pub fn new(origins: impl IntoIterator<Item = Origin>) -> Self {
        let origins: Arc<[Origin]> = origins.into_iter().collect();
        Provenance {
            origins: (!origins.is_empty()).then_some(origins),
            checked: false,
        }
    }

    pub fn origins(&self) -> &[Origin] {
        self.origins.as_deref().unwrap_or_default()
    }

    pub fn is_known(&self) -> bool {
        self.origins.is_some()
    }

    /// Is this the very provenance `other` was cloned from?
    pub fn same(&self, other: &Provenance) -> bool {
        matches!((&self.origins, &other.origins), (Some(a), Some(b)) if Arc::ptr_eq(a, b))
    }

    pub fn is_checked(&self) -> bool {
        self.checked
    }

    /// Says whether the route passed the check and has not grown since;
    /// whoever adds to a checked route must set it back to false.
    pub fn set_checked(&mut self, checked: bool) {
        self.checked = checked;
    }
}

impl PartialEq for Provenance {
    fn eq(&self, _: &Provenance) -> bool {
        true
    }
}

impl Eq for Provenance {}

impl std::fmt::Display for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, origin) in self.origins().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{origin}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AutomaticHttps {
    /// Certificates come from Gateway listeners, never from ACME on our behalf.
    #[serde(default)]
    pub disable: bool,
}

/// Serialized by hand (below) to tell the check walk which routes were
/// checked as built.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Route {
    #[serde(rename = "match", default)]
    pub matchers: Vec<MatcherSet>,
    #[serde(default)]
    pub handle: Vec<Handler>,
    #[serde(default)]
    pub terminal: bool,
    /// The rule it serves, when it serves one.
    #[serde(skip)]
    pub provenance: Provenance,
}

/// The struct name a checked route serializes under. The check walk sees
/// the config only through `Serialize`, and this is how it learns to skip
/// the route; JSON has no struct names, so Kengine's JSON is unchanged.
pub const CHECKED_ROUTE: &str = "Route (checked)";

impl Serialize for Route {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let name = match self.provenance.is_checked() {
            true => CHECKED_ROUTE,
            false => "Route",
        };
        let (matchers, handle) = (!self.matchers.is_empty(), !self.handle.is_empty());
        let fields = usize::from(matchers) + usize::from(handle) + usize::from(self.terminal);
        let mut route = serializer.serialize_struct(name, fields)?;
        if matchers {
            route.serialize_field("match", &self.matchers)?;
        }
        if handle {
            route.serialize_field("handle", &self.handle)?;
        }
        if self.terminal {
            route.serialize_field("terminal", &true)?;
        }
        route.end()
    }
}

/// One matcher set: every present matcher must match (AND). The sets of a
/// route are ORed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MatcherSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regexp: Option<RegexpMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_regexp: Option<BTreeMap<String, RegexpMatcher>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<BTreeMap<String, Vec<String>>>,
    /// Keyed by placeholder, e.g. `{http.request.host}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars_regexp: Option<BTreeMap<String, RegexpMatcher>>,
    /// Matches when none of these sets match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Vec<MatcherSet>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegexpMatcher {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub pattern: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "handler", rename_all = "snake_case")]
pub enum Handler {
    Subroute {
        routes: Vec<Route>,
    },
    /// Runs a server's named route, then continues with the next handler.
    Invoke {
        name: String,
    },
    StaticResponse(StaticResponse),
    // Boxed: the two largest variants would make every handler of every
    // route 272 bytes; most handlers are `invoke`s.
    ReverseProxy(Box<ReverseProxy>),
    Headers(Box<Headers>),
    /// Returns an error with this status (a number or a placeholder) to the
    /// server's error routes, instead of writing a response.
    Error {
        status_code: String,
    },
    /// Changes the request URI; a path without `?` keeps the query string.
    /// `path_regexp` replaces within the escaped path instead, so encoded
    /// octets such as `%2F` outside the match survive (`uri` decodes them).
    Rewrite {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        uri: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        path_regexp: Vec<PathReplace>,
    },
}

/// One regexp replacement of a `rewrite` handler's `path_regexp`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PathReplace {
    pub find: String,
    pub replace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StaticResponse {
    pub status_code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReverseProxy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<HttpTransport>,
    pub upstreams: Vec<Upstream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancing>,
    /// Routes that replace an upstream response that matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handle_response: Vec<ResponseHandler>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseHandler {
    #[serde(rename = "match")]
    pub matcher: ResponseMatcher,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseMatcher {
    pub status_code: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpTransport {
    /// Always `http`: the module name.
    pub protocol: String,
    /// e.g. `["h2c", "2"]` for cleartext HTTP/2 upstreams.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    /// Time to wait for the upstream's response headers (a Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_timeout: Option<String>,
    /// Dial the upstreams over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TransportTls>,
}

/// How the proxy speaks TLS to its upstreams.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportTls {
    /// The CAs the upstream's certificate must chain to; none: the
    /// system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaPool>,
    /// The SNI sent, and the name the certificate is verified against.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_name: String,
    /// The client certificate chain presented to the upstream (PEM file;
    /// Kengine reads it when the config is loaded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate_file: String,
    /// Its private key (PEM file).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate_key_file: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Upstream {
    pub dial: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_policy: Option<SelectionPolicy>,
    /// Extra tries when an upstream cannot be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum SelectionPolicy {
    /// Deterministic: upstream i gets weights[i] of every sum(weights) requests.
    WeightedRoundRobin { weights: Vec<u32> },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOps>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeaderOps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<Vec<String>>,
    /// Response only: apply when the response is written, after the
    /// upstream's headers are in, so `set` and `delete` win over them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsApp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Certificates>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Certificates {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_pem: Vec<PemCertificate>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PemCertificate {
    pub certificate: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsConnectionPolicy {
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matchers: Option<TlsMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_selection: Option<CertificateSelection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_authentication: Option<ClientAuthentication>,
}

/// Client certificate checks of a TLS connection policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientAuthentication {
    /// The CAs client certificates must chain to. Never the older
    /// `trusted_ca_certs` field beside `mode`: Kengine 2.8.4 (Caddy 2.8.4)
    /// does not provision the pool it builds from it, so verification falls
    /// back to the system roots and any publicly signed certificate passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaPool>,
    /// `request`, `require`, `verify_if_given` or `require_and_verify`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
}

/// A `tls.ca_pool.source` module; only `inline` is emitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaPool {
    /// `inline`.
    pub provider: String,
    /// Base64 DER certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_ca_certs: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertificateSelection {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any_tag: Vec<String>,
}

impl Config {
    /// The canonical bytes of this config: what we push and what we compare.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("config model always serializes")
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("config model always serializes")
    }
}

impl Route {
    pub fn handle(handle: Vec<Handler>) -> Self {
        Route {
            handle,
            ..Default::default()
        }
    }
}

impl Handler {
    pub fn status(code: u16) -> Self {
        Handler::StaticResponse(StaticResponse {
            status_code: code,
            ..Default::default()
        })
    }

    /// A gRPC error as a "trailers-only" response: HTTP 200 whose headers
    /// carry the gRPC status, so a client reads the code, not an HTTP error.
    pub fn grpc_status(code: u8, message: &str) -> Self {
        let header = |v: String| vec![v];
        Handler::StaticResponse(StaticResponse {
            status_code: 200,
            body: None,
            headers: Some(BTreeMap::from([
                ("Content-Type".into(), header("application/grpc".into())),
                ("Grpc-Status".into(), header(code.to_string())),
                ("Grpc-Message".into(), header(message.replace(' ', "%20"))),
            ])),
        })
    }
}
