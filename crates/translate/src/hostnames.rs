//! Gateway API hostname semantics: wildcards, intersection and specificity.
//! A Gateway API wildcard `*.example.com` matches one *or more* labels.

use std::cmp::Ordering;

/// A hostname pattern, lowercased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Host {
    Exact(String),
    /// `*.suffix`: any host with at least one label before `.suffix`.
    Wildcard(String),
    /// No hostname: every host.
    Any,
}

impl Host {
    pub fn parse(hostname: &str) -> Host {
        let h = hostname.to_ascii_lowercase();
        match h.strip_prefix("*.") {
            Some(suffix) => Host::Wildcard(suffix.to_string()),
            None => Host::Exact(h),
        }
    }

    pub fn from_option(hostname: Option<&str>) -> Host {
        hostname
            .filter(|h| !h.is_empty())
            .map(Host::parse)
            .unwrap_or(Host::Any)
    }

    /// Does this pattern match the concrete host `host` (lowercase)?
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Host::Exact(h) => h == host,
            Host::Wildcard(suffix) => has_label_suffix(host, suffix),
            Host::Any => true,
        }
    }

    /// Does every host this pattern matches also match `self`?
    pub fn covers(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Any, _) => true,
            (_, Host::Any) => false,
            (Host::Exact(a), Host::Exact(b)) => a == b,
            (Host::Exact(_), Host::Wildcard(_)) => false,
            (Host::Wildcard(s), Host::Exact(h)) => has_label_suffix(h, s),
            (Host::Wildcard(s), Host::Wildcard(o)) => s == o || has_label_suffix(o, s),
        }
    }

    /// The hosts both patterns match, as a pattern: the more specific of
    /// the two when one covers the other, else nothing.
    pub fn intersect(&self, other: &Host) -> Option<Host> {
        if self.covers(other) {
            Some(other.clone())
        } else if other.covers(self) {
            Some(self.clone())
        } else {
            None
        }
    }

    /// Ordering key, most specific first: exact names, then wildcards with
    /// the longest suffix, then `Any`; ties broken by name for determinism.
    pub fn specificity_cmp(&self, other: &Host) -> Ordering {
        fn rank(h: &Host) -> (u8, std::cmp::Reverse<usize>, &str) {
            match h {
                Host::Exact(s) => (0, std::cmp::Reverse(s.len()), s),
                Host::Wildcard(s) => (1, std::cmp::Reverse(s.len()), s),
                Host::Any => (2, std::cmp::Reverse(0), ""),
            }
        }
        rank(self).cmp(&rank(other))
    }

    /// How specific a route's own hostname is, most specific first: among
    /// routes that share an effective hostname, the one whose original
    /// hostname is more specific wins (`GatewayRouteHostnameIntersectionPrecedence`).
    /// A route without hostnames comes last.
    pub fn origin_rank(&self) -> OriginRank {
        match self {
            Host::Exact(s) => OriginRank(0, std::cmp::Reverse(s.len())),
            Host::Wildcard(s) => OriginRank(1, std::cmp::Reverse(s.len())),
            Host::Any => OriginRank(2, std::cmp::Reverse(0)),
        }
    }

    /// Regexp (for `vars_regexp` on the request host) matching what a
    /// wildcard matches; the host matcher's own `*` covers one label only.
    pub fn wildcard_regexp(suffix: &str) -> String {
        format!(
            "^(?i)[^.]+(\\.[^.]+)*\\.{}$",
            super::literals::escape(suffix)
        )
    }
}

/// Checks a listener's or route's hostname against the Gateway API's rules
/// (files skip the CRD schema): an RFC 1123 subdomain of at most 253
/// characters, labels of at most 63, optionally led by a `*.` wildcard
/// label, and not an IP address. Case is not significant (RFC 4343); the
/// CRD's pattern asks for lowercase, and we lowercase.
pub fn validate(hostname: &str) -> Result<(), String> {
    let why = |what: &str| Err(format!("hostname {hostname:?} is not valid: {what}"));
    if hostname.len() > 253 {
        return why("longer than 253 characters");
    }
    if hostname.parse::<std::net::IpAddr>().is_ok() {
        return why("IP addresses are not allowed");
    }
    let name = hostname.strip_prefix("*.").unwrap_or(hostname);
    if name.is_empty() {
        return why("it is empty");
    }
    for label in name.split('.') {
        let b = label.as_bytes();
        let inner = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-';
        if b.is_empty() || b.len() > 63 {
            return why("each label needs 1 to 63 characters");
        }
        if !(b.iter().all(inner) && b[0] != b'-' && b[b.len() - 1] != b'-') {
            return why(
                "labels are letters, digits and inner '-', with only a leading '*.' wildcard",
            );
        }
    }
    Ok(())
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Exact(h) => f.write_str(h),
            Host::Wildcard(s) => write!(f, "*.{s}"),
            Host::Any => f.write_str("*"),
        }
    }
}

/// [`Host::origin_rank`]: sorts ascending, the first wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OriginRank(u8, std::cmp::Reverse<usize>);

fn has_label_suffix(host: &str, suffix: &str) -> bool {
    host.len() > suffix.len() + 1
        && host.ends_with(suffix)
        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
}

/// An effective hostname of a route on a listener, with the rank of the
/// route hostname it came from.
pub type Effective = (Host, OriginRank);

/// The effective hostnames of a route on a listener, each with the rank of
/// the route hostname it came from (the most specific one when several
/// give the same); `None` when they do not intersect at all. A route without
/// hostnames takes the listener's, with the lowest rank.
pub fn effective_hostnames(listener: &Host, route_hostnames: &[String]) -> Option<Vec<Effective>> {
    if route_hostnames.is_empty() {
        return Some(vec![(listener.clone(), Host::Any.origin_rank())]);
    }
    let mut out: Vec<Effective> = route_hostnames
        .iter()
        .filter_map(|h| {
            // `listener.intersect(&h)`, without copying `h`.
            let h = Host::parse(h);
            let rank = h.origin_rank();
            if listener.covers(&h) {
                Some((h, rank))
            } else if h.covers(listener) {
                Some((listener.clone(), rank))
            } else {
                None
            }
        })
        .collect();
    out.sort_by(|a, b| a.0.specificity_cmp(&b.0).then(a.1.cmp(&b.1)));
    out.dedup_by(|later, first| later.0 == first.0);
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Host {
        Host::parse(s)
    }

    #[test]
    fn wildcards_match_one_or_more_labels() {
        let w = h("*.example.com");
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("aexample.com"));
        assert!(Host::Any.matches("anything"));
        assert!(h("Foo.COM").matches("foo.com"));
    }

    #[test]
    fn intersection_keeps_the_more_specific_side() {
        assert_eq!(
            h("*.example.com").intersect(&h("foo.example.com")),
            Some(h("foo.example.com"))
        );
        assert_eq!(
            h("foo.example.com").intersect(&h("*.example.com")),
            Some(h("foo.example.com"))
        );
        assert_eq!(
            h("*.example.com").intersect(&h("*.foo.example.com")),
            Some(h("*.foo.example.com"))
        );
        assert_eq!(
            h("*.foo.example.com").intersect(&h("*.example.com")),
            Some(h("*.foo.example.com"))
        );
        assert_eq!(h("*.example.com").intersect(&h("example.com")), None);
        assert_eq!(h("a.com").intersect(&h("b.com")), None);
        assert_eq!(Host::Any.intersect(&h("*.x.io")), Some(h("*.x.io")));
    }

    #[test]
    fn effective_hostnames_of_routes() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let hosts = |l: &str, r: &[&str]| {
            effective_hostnames(&h(l), &names(r)).map(|v| v.into_iter().map(|(h, _)| h).collect())
        };
        assert_eq!(hosts("*.example.com", &[]), Some(vec![h("*.example.com")]));
        assert_eq!(
            hosts("*.example.com", &["*.com", "x.example.com", "other.org"]),
            Some(vec![h("x.example.com"), h("*.example.com")])
        );
        assert_eq!(hosts("a.org", &["b.org"]), None);
    }

    #[test]
    fn effective_hostnames_keep_the_most_specific_origin() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Both give abc.example.com: the exact one ranks it.
        let got = effective_hostnames(
            &h("abc.example.com"),
            &names(&["*.example.com", "abc.example.com"]),
        )
        .unwrap();
        assert_eq!(
            got,
            vec![(h("abc.example.com"), h("abc.example.com").origin_rank())]
        );
        let wildcard = effective_hostnames(&h("abc.example.com"), &names(&["*.example.com"]));
        let none = effective_hostnames(&h("abc.example.com"), &[]);
        let (exact, wildcard, none) = (got[0].1, wildcard.unwrap()[0].1, none.unwrap()[0].1);
        assert!(exact < wildcard && wildcard < none);
        assert!(h("*.b.example.com").origin_rank() < h("*.example.com").origin_rank());
    }

    #[test]
    fn specificity_orders_exact_then_longer_wildcards_then_any() {
        let mut v = vec![Host::Any, h("*.com"), h("*.a.com"), h("b.a.com")];
        v.sort_by(Host::specificity_cmp);
        assert_eq!(v, vec![h("b.a.com"), h("*.a.com"), h("*.com"), Host::Any]);
    }

    #[test]
    fn hostnames_follow_rfc_1123_and_the_crd() {
        for good in [
            "a",
            "foo.example.com",
            "*.example.com",
            "*.a",
            "x-1.y2.Z",
            "1.2.3",
        ] {
            assert_eq!(validate(good), Ok(()), "{good}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = ["abcdefghi"; 26].join(".");
        for bad in [
            "",
            "*",
            "*.",
            "*.a(b",
            "*.a$|.*",
            "a.*.com",
            "**.com",
            "-a.com",
            "a-.com",
            "a..com",
            "a.com.",
            "a_b.com",
            "10.0.0.1",
            "::1",
            "caf\u{e9}.com",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wildcard_regexp_escapes_every_metacharacter() {
        // Unvalidated input must still stay literal.
        assert_eq!(
            Host::wildcard_regexp("a$|.*"),
            "^(?i)[^.]+(\\.[^.]+)*\\.a\\$\\|\\.\\*$"
        );
    }

    #[test]
    fn wildcard_regexp_is_anchored_and_escaped() {
        assert_eq!(
            Host::wildcard_regexp("a.com"),
            "^(?i)[^.]+(\\.[^.]+)*\\.a\\.com$"
        );
    }
}
