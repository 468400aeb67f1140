//! Status conditions as the Gateway API names them, with stable
//! `lastTransitionTime`s. Condition types and reasons are enums: the only
//! place their names are spelled is here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use kengine_gateway_model::named;

named! {
    /// Condition types of GatewayClasses, Gateways, listeners, routes and
    /// policies.
    pub Type {
        Accepted,
        Conflicted,
        InsecureFrontendValidationMode,
        Programmed,
        ResolvedRefs,
        SupportedVersion,
    }
}

named! {
    /// Condition reasons, as the spec names them (and a few of ours where it
    /// has none, documented in the README).
    pub Reason {
        Accepted,
        AddressNotUsable,
        BackendNotFound,
        ConfigurationChanged,
        Conflicted,
        HostnameConflict,
        Invalid,
        InvalidCACertificateKind,
        InvalidBackendTLSPolicy,
        InvalidCACertificateRef,
        InvalidCertificateRef,
        InvalidClientCertificateRef,
        InvalidKind,
        InvalidParameters,
        InvalidRouteKinds,
        ListenersNotValid,
        NoConflicts,
        NoMatchingListenerHostname,
        NoMatchingParent,
        NoValidCACertificate,
        NotAllowedByListeners,
        Pending,
        PortUnavailable,
        Programmed,
        ProtocolConflict,
        RefNotPermitted,
        ResolvedRefs,
        SupportedVersion,
        UnsupportedAddress,
        UnsupportedProtocol,
        UnsupportedValue,
    }
}

/// Kubernetes caps a condition message at 32768 bytes; ours stay well
/// under it (a message that long helps no one reading status).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// A condition before it is stamped with generation and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub type_: Type,
    pub status: bool,
    pub reason: Reason,
    pub message: String,
}

impl Cond {
    pub fn new(type_: Type, status: bool, reason: Reason, message: impl Into<String>) -> Self {
        Cond {
            type_,
            status,
            reason,
            message: bounded(message.into()),
        }
    }

    pub fn ok(type_: Type, reason: Reason) -> Self {
        Cond::new(type_, true, reason, "")
    }
}

/// `message`, cut at a character boundary to [`MAX_MESSAGE_BYTES`].
fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES - "…".len();
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// Stamps conditions. A condition whose status did not change keeps the
/// `lastTransitionTime` it had in `previous`; a new or flipped one gets `now`.
pub fn stamp(
    conds: Vec<Cond>,
    generation: Option<i64>,
    previous: Option<&[Condition]>,
    now: &Time,
) -> Vec<Condition> {
    let named = conds
        .into_iter()
        .map(|c| (c.type_.as_str(), c.status, c.reason.as_str(), c.message))
        .collect();
    stamp_named(named, generation, previous, now)
}

/// [`stamp`] for conditions of other types than the Gateway API's (our
/// KengineInstance's): `(type, status, reason, message)`. The one place
/// where `lastTransitionTime` is decided.
pub fn stamp_named(
    conds: Vec<(&str, bool, &str, String)>,
    generation: Option<i64>,
    previous: Option<&[Condition]>,
    now: &Time,
) -> Vec<Condition> {
    conds
        .into_iter()
        .map(|(type_, status, reason, message)| {
            let status = if status { "True" } else { "False" }.to_string();
            let last = previous
                .and_then(|p| p.iter().find(|o| o.type_ == type_ && o.status == status))
                .map(|o| o.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: type_.to_string(),
                status,
                reason: reason.to_string(),
                message: bounded(message),
                observed_generation: generation,
                last_transition_time: last,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn keeps_transition_time_until_status_flips() {
        let first = stamp(
            vec![Cond::ok(Type::Accepted, Reason::Accepted)],
            Some(1),
            None,
            &t(10),
        );
        assert_eq!(first[0].last_transition_time, t(10));
        assert_eq!(first[0].observed_generation, Some(1));
        let same = stamp(
            vec![Cond::ok(Type::Accepted, Reason::Accepted)],
            Some(2),
            Some(&first),
            &t(20),
        );
        assert_eq!(same[0].last_transition_time, t(10));
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = stamp(
            vec![Cond::new(Type::Accepted, false, Reason::Invalid, "x")],
            Some(3),
            Some(&same),
            &t(30),
        );
        assert_eq!(flipped[0].last_transition_time, t(30));
        assert_eq!(flipped[0].status, "False");
    }

    #[test]
    fn names_are_the_variants_and_messages_are_bounded() {
        assert_eq!(
            Reason::NoMatchingListenerHostname.as_str(),
            "NoMatchingListenerHostname"
        );
        assert_eq!(Type::ResolvedRefs.to_string(), "ResolvedRefs");
        let long = Cond::new(Type::Accepted, false, Reason::Invalid, "é".repeat(10_000));
        assert!(long.message.len() <= MAX_MESSAGE_BYTES);
        assert!(long.message.ends_with('…'));
        assert_eq!(
            Cond::new(Type::Accepted, false, Reason::Invalid, "short").message,
            "short"
        );
    }
}
