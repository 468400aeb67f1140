//! Just enough DER to read who a certificate names: its subject common names
//! and its DNS subject alternative names.
//!
//! Only called on certificates that webpki has already parsed and verified,
//! so anything malformed simply yields fewer names.

/// The names a certificate is issued to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Names {
    pub common_names: Vec<String>,
    pub dns_names: Vec<String>,
}

impl Names {
    /// Whether `name` is one of the DNS SANs or the subject CN (exactly, but
    /// ASCII case-insensitively; no wildcard matching).
    pub fn contains(&self, name: &str) -> bool {
        self.dns_names
            .iter()
            .chain(&self.common_names)
            .any(|n| n.eq_ignore_ascii_case(name))
    }
}

impl Names {
    /// Each name with its kind, e.g. `CN kengine-gateway-controller`.
    pub fn labelled(&self) -> Vec<String> {
        let cns = self.common_names.iter().map(|n| format!("CN {n}"));
        let dns = self.dns_names.iter().map(|n| format!("DNS {n}"));
        cns.chain(dns).collect()
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[3] EXPLICIT Extensions` in TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
/// `[2] IMPLICIT IA5String`: GeneralName's dNSName.
const DNS_NAME: u8 = 0x82;
/// 2.5.4.3, id-at-commonName.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.29.17, id-ce-subjectAltName.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// The names in a DER certificate.
pub fn names(cert_der: &[u8]) -> Names {
    let mut names = Names::default();
    let _ = parse(cert_der, &mut names);
    names
}

fn parse(cert_der: &[u8], names: &mut Names) -> Option<()> {
    let (cert, _) = expect(cert_der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    // version [0] EXPLICIT, optional
    let (tag, _, after) = next(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    // serialNumber, signature, issuer, validity
    for _ in 0..4 {
        rest = next(rest)?.2;
    }
    let (subject, after) = expect(rest, SEQUENCE)?;
    read_common_names(subject, &mut names.common_names);
    // subjectPublicKeyInfo, then optional unique IDs and extensions.
    let (_, _, mut rest) = next(after)?;
    while let Some((tag, contents, after)) = next(rest) {
        if tag == EXTENSIONS {
            read_dns_names(contents, &mut names.dns_names);
        }
        rest = after;
    }
    Some(())
}

fn read_common_names(mut rdns: &[u8], out: &mut Vec<String>) {
    while let Some((set, after)) = expect(rdns, SET) {
        let mut attrs = set;
        while let Some((attr, after)) = expect(attrs, SEQUENCE) {
            if let Some((oid, value)) = expect(attr, OID)
                && oid == OID_COMMON_NAME
                && let Some((tag, contents, _)) = next(value)
                && let Some(s) = directory_string(tag, contents)
            {
                out.push(s);
            }
            attrs = after;
        }
        rdns = after;
    }
}

/// UTF8String, PrintableString, IA5String, TeletexString (as Latin-1) and
/// BMPString (UCS-2).
fn directory_string(tag: u8, contents: &[u8]) -> Option<String> {
    match tag {
        0x0c | 0x13 | 0x16 => String::from_utf8(contents.to_vec()).ok(),
        0x14 => Some(contents.iter().map(|&b| char::from(b)).collect()),
        0x1e => {
            let units: Vec<u16> = contents
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

fn read_dns_names(explicit: &[u8], out: &mut Vec<String>) {
    let Some((mut extensions, _)) = expect(explicit, SEQUENCE) else {
        return;
    };
    while let Some((extension, after)) = expect(extensions, SEQUENCE) {
        extensions = after;
        let Some((oid, mut rest)) = expect(extension, OID) else {
            continue;
        };
        if oid != OID_SUBJECT_ALT_NAME {
            continue;
        }
        if let Some((_, after)) = expect(rest, BOOLEAN) {
            rest = after; // critical
        }
        let Some((value, _)) = expect(rest, OCTET_STRING) else {
            continue;
        };
        let Some((mut general_names, _)) = expect(value, SEQUENCE) else {
            continue;
        };
        while let Some((tag, contents, after)) = next(general_names) {
            if tag == DNS_NAME
                && let Ok(s) = std::str::from_utf8(contents)
            {
                out.push(s.to_string());
            }
            general_names = after;
        }
    }
}

/// The next element if it has tag `tag`: (contents, rest).
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match next(input)? {
        (t, contents, rest) if t == tag => Some((contents, rest)),
        _ => None,
    }
}

/// One DER element: (tag, contents, rest). Single-byte tags only, which is
/// all a certificate uses.
fn next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, input) = input.split_first()?;
    let (len, input) = if first < 0x80 {
        (usize::from(first), input)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let len = input[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &input[n..])
    };
    if input.len() < len {
        return None;
    }
    let (contents, rest) = input.split_at(len);
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: Option<&str>, sans: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "kengine");
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_common_name_and_dns_names() {
        let names = names(&cert(
            Some("kengine-gateway-controller"),
            &["a.example", "10.0.0.1", "b.example"],
        ));
        assert_eq!(names.common_names, ["kengine-gateway-controller"]);
        assert_eq!(names.dns_names, ["a.example", "b.example"]);
        assert!(names.contains("kengine-gateway-controller"));
        assert!(names.contains("A.example"));
        assert!(!names.contains("10.0.0.1"));
        assert!(!names.contains("kengine-gateway"));
        assert_eq!(
            names.labelled(),
            [
                "CN kengine-gateway-controller",
                "DNS a.example",
                "DNS b.example"
            ]
        );
    }

    #[test]
    fn no_wildcard_matching() {
        let names = names(&cert(None, &["*.example"]));
        assert_eq!(names.dns_names, ["*.example"]);
        assert!(!names.contains("a.example"));
        assert!(names.common_names.is_empty());
    }

    #[test]
    fn garbage_names_nothing() {
        assert_eq!(names(b"\x30\x82\xff"), Names::default());
        assert_eq!(names(&[]), Names::default());
        assert!(names(&[]).labelled().is_empty());
    }
}
