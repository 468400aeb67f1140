//! Literal text in RE2 patterns and request paths: escaping and percent
//! decoding, shared by the matchers, the filters and the hostnames.

/// An Exact or PathPrefix value as Kengine's `path_regexp` sees the request
/// path: percent-decoded once (the CRD admits a space or a non-ASCII
/// character only as `%XX` octets). Malformed escapes stay literal, as in
/// Go's path decoding they would fail the request instead.
pub fn decode_path(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains('%') {
        return value.into();
    }
    String::from_utf8_lossy(&percent_decode(value))
        .into_owned()
        .into()
}

/// The octets of `value` with each valid `%XX` decoded once.
pub fn percent_decode(value: &str) -> Vec<u8> {
    let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
    let (bytes, mut out, mut i) = (value.as_bytes(), Vec::with_capacity(value.len()), 0);
    while i < bytes.len() {
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Escapes a literal for Go's RE2 syntax.
pub fn escape(literal: &str) -> String {
    anchored("", literal, "")
}

/// `start`, then `literal` escaped for Go's RE2 syntax, then `end`.
pub fn anchored(start: &str, literal: &str, end: &str) -> String {
    let mut out = String::with_capacity(start.len() + literal.len() + end.len() + 2);
    out.push_str(start);
    for c in literal.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out.push_str(end);
    out
}
