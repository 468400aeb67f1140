//! Does Kengine's regexp engine (Go's RE2 `regexp/syntax`, Go 1.22) accept
//! a pattern? Parsed with `regex-syntax`, then checked for every construct
//! Rust accepts and Go rejects (or reads differently). Conservative: a
//! pattern both would accept may still be refused, never the reverse.

use std::collections::HashSet;
use std::sync::Mutex;

use regex_syntax::ast::{
    self, Ast, ClassSet, ClassSetItem, ClassUnicodeKind, Flag, FlagsItemKind, GroupKind,
    HexLiteralKind, LiteralKind, RepetitionKind, RepetitionRange,
};

/// Go's limit on a counted repetition, and on nested counted repetitions'
/// product (`regexp/syntax` `repeatIsValid`).
const MAX_REPEAT: u32 = 1000;
/// Far above any Gateway API value (1024 bytes), far below Go's size limits.
const MAX_LEN: usize = 32 * 1024;
/// Go's Unicode classes are its `unicode` tables, case-sensitive: the
/// general categories and `Any`, plus the commonest scripts.
const UNICODE_NAMES: &[&str] = &[
    "Any",
    "C",
    "Cc",
    "Cf",
    "Co",
    "Cs",
    "L",
    "Ll",
    "Lm",
    "Lo",
    "Lt",
    "Lu",
    "M",
    "Mc",
    "Me",
    "Mn",
    "N",
    "Nd",
    "Nl",
    "No",
    "P",
    "Pc",
    "Pd",
    "Pe",
    "Pf",
    "Pi",
    "Po",
    "Ps",
    "S",
    "Sc",
    "Sk",
    "Sm",
    "So",
    "Z",
    "Zl",
    "Zp",
    "Zs",
    "Arabic",
    "Armenian",
    "Bengali",
    "Cyrillic",
    "Devanagari",
    "Ethiopic",
    "Georgian",
    "Greek",
    "Han",
    "Hangul",
    "Hebrew",
    "Hiragana",
    "Katakana",
    "Latin",
    "Tamil",
    "Thai",
];

/// Why a pattern would not compile in Kengine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid regular expression {pattern:?}: {reason}")]
pub struct Re2Error {
    pub pattern: String,
    pub reason: String,
}

/// Bytes of accepted patterns remembered; past that the memory starts
/// over. A fleet's config holds a few short patterns per rule.
const KNOWN_GOOD_BYTES: usize = 8 << 20;

/// Patterns already accepted, and their total length. Every translate
/// pass and every push checks each pattern of every route again; parsing
/// them all again made translate five times slower (BENCHMARKS.md).
static KNOWN_GOOD: Mutex<(Option<HashSet<Box<str>>>, usize)> = Mutex::new((None, 0));

/// `Ok` when Go's RE2 compiles `pattern` (see the module comment).
pub fn check(pattern: &str) -> Result<(), Re2Error> {
    let known = || KNOWN_GOOD.lock().unwrap_or_else(|p| p.into_inner());
    if known().0.as_ref().is_some_and(|set| set.contains(pattern)) {
        return Ok(());
    }
    parse(pattern)?;
    let mut guard = known();
    let (set, bytes) = &mut *guard;
    if *bytes + pattern.len() > KNOWN_GOOD_BYTES {
        *set = None;
        *bytes = 0;
    }
    if set.get_or_insert_with(HashSet::new).insert(pattern.into()) {
        *bytes += pattern.len();
    }
    Ok(())
}

fn parse(pattern: &str) -> Result<(), Re2Error> {
    let fail = |reason: String| Re2Error {
        pattern: pattern.to_string(),
        reason,
    };
    if pattern.len() > MAX_LEN {
        return Err(fail(format!("longer than {MAX_LEN} bytes")));
    }
    let parsed = ast::parse::ParserBuilder::new()
        .octal(false)
        .nest_limit(250)
        .build()
        .parse(pattern)
        .map_err(|e| fail(e.kind().to_string()))?;
    go_only(&parsed).map_err(|r| fail(r.to_string()))?;
    regex_syntax::hir::translate::Translator::new()
        .translate(pattern, &parsed)
        .map_err(|e| fail(e.kind().to_string()))?;
    Ok(())
}

/// Constructs of Rust's syntax that Go's lacks.
fn go_only(node: &Ast) -> Result<(), &'static str> {
    match node {
        Ast::Empty(_) | Ast::Dot(_) | Ast::ClassPerl(_) => Ok(()),
        Ast::Flags(f) => flags(&f.flags),
        Ast::Literal(l) => literal(l),
        Ast::Assertion(a) => {
            use ast::AssertionKind::*;
            match a.kind {
                StartLine | EndLine | StartText | EndText | WordBoundary | NotWordBoundary => {
                    Ok(())
                }
                _ => Err("this word-boundary assertion is not RE2 syntax"),
            }
        }
        Ast::ClassUnicode(u) => unicode(u),
        Ast::ClassBracketed(c) => class(&c.kind),
        Ast::Repetition(r) => {
            if matches!(*r.ast, Ast::Repetition(_)) {
                return Err("invalid nested repetition operator");
            }
            if !repeat_valid(node, MAX_REPEAT) {
                return Err("invalid repeat count (at most 1000, nested counts multiply)");
            }
            go_only(&r.ast)
        }
        Ast::Group(g) => {
            match &g.kind {
                GroupKind::CaptureName { name, .. } => {
                    if !name
                        .name
                        .bytes()
                        .all(|b| b == b'_' || b.is_ascii_alphanumeric())
                    {
                        return Err("invalid capture group name");
                    }
                }
                GroupKind::NonCapturing(f) => flags(f)?,
                GroupKind::CaptureIndex(_) => {}
            }
            go_only(&g.ast)
        }
        Ast::Alternation(a) => a.asts.iter().try_for_each(go_only),
        Ast::Concat(c) => c.asts.iter().try_for_each(go_only),
    }
}

fn flags(f: &ast::Flags) -> Result<(), &'static str> {
    for item in &f.items {
        match item.kind {
            FlagsItemKind::Negation
            | FlagsItemKind::Flag(
                Flag::CaseInsensitive | Flag::MultiLine | Flag::DotMatchesNewLine | Flag::SwapGreed,
            ) => {}
            FlagsItemKind::Flag(_) => return Err("RE2 knows only the flags i, m, s and U"),
        }
    }
    Ok(())
}

fn literal(l: &ast::Literal) -> Result<(), &'static str> {
    match l.kind {
        LiteralKind::HexFixed(HexLiteralKind::X) | LiteralKind::HexBrace(HexLiteralKind::X) => {
            Ok(())
        }
        LiteralKind::HexFixed(_) | LiteralKind::HexBrace(_) => {
            Err("\\u and \\U escapes are not RE2 syntax; use \\x{...}")
        }
        LiteralKind::Octal => Err("octal escapes are not supported"),
        _ => Ok(()),
    }
}

fn unicode(u: &ast::ClassUnicode) -> Result<(), &'static str> {
    let known = match &u.kind {
        ClassUnicodeKind::OneLetter(c) => "CLMNPSZ".contains(*c),
        ClassUnicodeKind::Named(name) => UNICODE_NAMES.contains(&name.as_str()),
        ClassUnicodeKind::NamedValue { .. } => false,
    };
    if known {
        Ok(())
    } else {
        Err("unknown Unicode class for RE2")
    }
}

/// Go reads `[` inside a class as a literal and has no set operations
/// (`&&`, `--`, `~~`), where Rust nests classes and combines them.
fn class(set: &ClassSet) -> Result<(), &'static str> {
    match set {
        ClassSet::BinaryOp(_) => Err("class set operations (&&, --, ~~) are not RE2 syntax"),
        ClassSet::Item(item) => class_item(item),
    }
}

fn class_item(item: &ClassSetItem) -> Result<(), &'static str> {
    match item {
        ClassSetItem::Bracketed(_) => Err("nested character classes are not RE2 syntax"),
        ClassSetItem::Union(u) => u.items.iter().try_for_each(class_item),
        ClassSetItem::Literal(l) => literal(l),
        ClassSetItem::Range(r) => literal(&r.start).and(literal(&r.end)),
        ClassSetItem::Unicode(u) => unicode(u),
        ClassSetItem::Empty(_) | ClassSetItem::Ascii(_) | ClassSetItem::Perl(_) => Ok(()),
    }
}

/// Go's `repeatIsValid`: counted repetitions nested in one another may
/// repeat at most `n` times in all.
fn repeat_valid(node: &Ast, mut n: u32) -> bool {
    if let Ast::Repetition(r) = node
        && let RepetitionKind::Range(range) = &r.op.kind
    {
        let m = match *range {
            RepetitionRange::Exactly(m) | RepetitionRange::AtLeast(m) => m,
            RepetitionRange::Bounded(_, m) => m,
        };
        if m == 0 {
            return true;
        }
        if m > n {
            return false;
        }
        n /= m;
    }
    match node {
        Ast::Repetition(r) => repeat_valid(&r.ast, n),
        Ast::Group(g) => repeat_valid(&g.ast, n),
        Ast::Alternation(a) => a.asts.iter().all(|s| repeat_valid(s, n)),
        Ast::Concat(c) => c.asts.iter().all(|s| repeat_valid(s, n)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_accepted_patterns_are_remembered() {
        for _ in 0..2 {
            assert_eq!(check("^/remembered$"), Ok(()));
            assert!(check("^/refused(").is_err(), "a refusal is never cached");
        }
        let known = KNOWN_GOOD.lock().unwrap();
        let set = known.0.as_ref().unwrap();
        assert!(set.contains("^/remembered$") && !set.contains("^/refused("));
        assert!(known.1 >= "^/remembered$".len() && known.1 <= KNOWN_GOOD_BYTES);
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            "([",
            "[z-a]",
            "(?<=a)b",
            "(?=a)",
            "a{100000}",
            "a{1001}",
            "(?:a{100}){100}",
            "\\1",
            "a**",
            "[a&&b]",
            "[a--b]",
            "[a[b]]",
            "\\<x",
            "\\b{start}",
            "(?x)a b",
            "(?u)a",
            "\\u0041",
            "\\p{Letter}",
            "\\p{scx=Greek}",
            "(?P<a.b>x)",
            "(?P<n>x)(?P<n>y)",
            "a{",
        ] {
            let err = check(bad).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn accepts_valid_go_regexps() {
        for good in [
            "^/v[0-9]+/.*",
            "(?i)abc",
            "\\d",
            "[[:alpha:]]",
            "(?P<n>x)",
            "(?<n>x)",
            "a{1000}",
            "(?:a{10}){100}",
            "(a*)*",
            "\\pL\\p{Greek}\\PN",
            "\\x41\\x{263a}",
            "[^]a-]",
            "(?s-m:.)",
            "\\.\\/\\-",
            "",
        ] {
            check(good).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
