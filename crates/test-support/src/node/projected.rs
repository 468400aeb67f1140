//! The files of `projected` volumes that only a kubelet can make: the
//! service-account token (a TokenRequest bound to the Pod) and downwardAPI
//! items. The ServiceAccount admission plugin gives every Pod such a volume
//! (`kube-api-access-*`: token, `kube-root-ca.crt`'s `ca.crt`, namespace)
//! unless `automountServiceAccountToken` is false. Tokens are not refreshed
//! (they live at least an hour, longer than a test).

use std::collections::HashMap;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, Volume};
use kube::api::{Api, PostParams};

use super::containers::Files;

/// Why a volume's files could not be made.
pub enum Failure {
    /// The Pod cannot run here (an unsupported source): fatal.
    Unsupported(String),
    /// An API call failed: try again on a later tick.
    Api(String),
}

pub async fn files(
    client: &kube::Client,
    pod: &Pod,
    volume: &Volume,
    fields: &HashMap<&str, String>,
) -> Result<Files, Failure> {
    let what = format!(
        "pod {}/{} volume {}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
        volume.name
    );
    let mut files = Files::new();
    let sources = volume
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten());
    for source in sources {
        if let Some(downward) = &source.downward_api {
            for item in downward.items.iter().flatten() {
                let value = item
                    .field_ref
                    .as_ref()
                    .and_then(|f| field(pod, fields, &f.field_path))
                    .ok_or_else(|| {
                        Failure::Unsupported(format!(
                            "{what}: downwardAPI item {} is not emulated (fieldRef to \
                             metadata.name/namespace/uid/labels/annotations, spec and status \
                             fields of the node agent only)",
                            item.path
                        ))
                    })?;
                files.insert(item.path.clone(), value.into_bytes());
            }
        }
        if let Some(token) = &source.service_account_token {
            let token_value = request_token(
                client,
                pod,
                token.audience.clone(),
                token.expiration_seconds,
            )
            .await
            .map_err(|e| Failure::Api(format!("{what}: TokenRequest: {e}")))?;
            files.insert(token.path.clone(), token_value.into_bytes());
        }
        if source.cluster_trust_bundle.is_some() {
            return Err(Failure::Unsupported(format!(
                "{what}: clusterTrustBundle sources are not emulated"
            )));
        }
    }
    Ok(files)
}

fn field(pod: &Pod, fields: &HashMap<&str, String>, path: &str) -> Option<String> {
    let pairs = |map: &Option<std::collections::BTreeMap<String, String>>| {
        let lines: Vec<String> = map
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        lines.join("\n")
    };
    match path {
        "metadata.uid" => pod.metadata.uid.clone(),
        "metadata.labels" => Some(pairs(&pod.metadata.labels)),
        "metadata.annotations" => Some(pairs(&pod.metadata.annotations)),
        _ => fields.get(path).cloned(),
    }
}

async fn request_token(
    client: &kube::Client,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> kube::Result<String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(expiration.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let answer = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await?;
    Ok(answer.status.map(|s| s.token).unwrap_or_default())
}
