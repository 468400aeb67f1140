//! Kengine expands `{name}` placeholders in most string fields (header
//! names and values, rewrite URIs, static responses, matcher values), and
//! `{env.*}` or `{file.*}` read the process's environment and files. A
//! user's string must reach such a field with its braces escaped: Kengine's
//! replacer reads `\{` and `\}` as literal braces (and only those; a
//! backslash before anything else stays as it is).

/// `literal` with every brace escaped, so Kengine emits it as it is.
pub fn escape(literal: &str) -> String {
    if !literal.contains(['{', '}']) {
        return literal.to_string();
    }
    let mut out = String::with_capacity(literal.len() + 4);
    for c in literal.chars() {
        if c == '{' || c == '}' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The placeholders Kengine would expand in `s`, by name, found the way
/// its replacer scans: an unescaped `{` up to the next unescaped `}`.
pub fn unescaped(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let escaped = i > 0 && b[i - 1] == b'\\';
        if b[i] != b'{' || escaped {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        loop {
            match b[end..].iter().position(|&c| c == b'}') {
                Some(p) if b[end + p - 1] == b'\\' && end + p > i + 1 => end += p + 1,
                Some(p) => {
                    out.push(&s[i + 1..end + p]);
                    i = end + p + 1;
                    break;
                }
                None => return out,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_strings_hold_no_placeholder() {
        for s in [
            "{env.HOME}",
            "a{b}c{",
            "\\{x}",
            "}{",
            "{{file./etc/hostname}}",
            "a\\",
        ] {
            assert!(unescaped(&escape(s)).is_empty(), "{s}");
        }
        assert_eq!(escape("\\{x}"), "\\\\{x\\}");
    }

    #[test]
    fn finds_placeholders_as_kengine_does() {
        assert_eq!(unescaped("{a}b{c.d}"), vec!["a", "c.d"]);
        assert_eq!(unescaped("\\{a}{b}"), vec!["b"]);
        assert_eq!(unescaped("{a\\}b}"), vec!["a\\}b"]);
        assert_eq!(unescaped("{open"), Vec::<&str>::new());
    }
}
