//! A linear pre-parse bound on YAML flow nesting (`[`, `{`). The YAML
//! scanner's cost per token grows with the flow depth, so a document nested
//! 100,000 levels deep takes quadratic time (tens of seconds) before the
//! parser's own recursion limit rejects it. Block nesting is linear there.

/// The parser rejects documents nested deeper than this anyway (its
/// recursion limit), so the bound rejects nothing that could have parsed.
pub const MAX_FLOW_DEPTH: usize = 128;

/// The first line (1-based) where flow nesting exceeds `max`, if any.
///
/// Brackets inside quoted scalars, comments and block scalars are skipped.
/// Where the scan cannot tell, it counts: it may count too deep, never too
/// shallow, so nothing deep reaches the parser.
pub fn first_too_deep_line(text: &str, max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut block: Option<BlockScalar> = None;
    for (number, line) in text.lines().enumerate() {
        let indent = line.chars().take_while(|c| *c == ' ').count();
        if let Some(scalar) = &mut block {
            if line.trim().is_empty() {
                continue;
            }
            let content = *scalar.content_indent.get_or_insert(indent);
            if content > scalar.parent && indent >= content {
                continue;
            }
            block = None;
        }
        let chars: Vec<char> = line.chars().collect();
        // Inside a flow collection every line continues a node.
        let mut at_node_start = quote.is_none();
        let mut entry_col = indent;
        let mut prev_raw: Option<char> = None;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            i += 1;
            if let Some(q) = quote {
                match (q, c) {
                    ('"', '\\') => i += 1,
                    ('\'', '\'') if next == Some('\'') => i += 1,
                    (q, c) if q == c => {
                        quote = None;
                        at_node_start = false;
                    }
                    _ => {}
                }
                prev_raw = Some(c);
                continue;
            }
            let after_space = prev_raw.is_none_or(|p| p == ' ' || p == '\t');
            let followed_by_space = next.is_none_or(|n| n == ' ' || n == '\t');
            match c {
                ' ' | '\t' => {
                    prev_raw = Some(c);
                    continue;
                }
                '#' if after_space => break,
                '"' | '\'' if at_node_start => quote = Some(c),
                '[' | '{' if depth > 0 || at_node_start || after_space => {
                    depth += 1;
                    if depth > max {
                        return Some(number + 1);
                    }
                    at_node_start = true;
                }
                ']' | '}' if depth > 0 => {
                    depth -= 1;
                    at_node_start = false;
                }
                ',' if depth > 0 => at_node_start = true,
                ':' if depth > 0 || followed_by_space => at_node_start = true,
                '-' | '?' if depth == 0 && at_node_start && followed_by_space => {
                    entry_col = i + chars[i..].iter().take_while(|c| **c == ' ').count();
                    at_node_start = true;
                }
                '|' | '>' if depth == 0 && at_node_start => {
                    block = Some(BlockScalar {
                        parent: entry_col,
                        content_indent: None,
                    });
                    break;
                }
                _ => at_node_start = false,
            }
            prev_raw = Some(c);
        }
    }
    None
}

/// A `|` or `>` scalar: its lines are indented deeper than the entry that
/// owns it, at the indentation of its first line.
struct BlockScalar {
    parent: usize,
    content_indent: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, max: usize) -> bool {
        first_too_deep_line(text, max).is_none()
    }

    #[test]
    fn counts_flow_nesting_across_lines() {
        assert!(depth_ok("a: [[1], {b: [2]}]\n", 3));
        assert!(!depth_ok("a: [[1], {b: [[2]]}]\n", 3));
        assert_eq!(first_too_deep_line("a:\n  - [\n    [[\n", 2), Some(3));
        assert!(!depth_ok(
            &format!("{}{}", "[".repeat(200), "]".repeat(200)),
            128
        ));
        // JSON is YAML too.
        assert!(!depth_ok("{\"a\":[{\"b\":[{\"c\":1}]}]}", 4));
        assert!(depth_ok("{\"a\":[{\"b\":[{\"c\":1}]}]}", 5));
    }

    #[test]
    fn skips_quotes_comments_and_block_scalars() {
        assert!(depth_ok(
            "a: \"[[[[\" # [[[[\nb: '[[''[['\nc: it's [a]\n",
            1
        ));
        assert!(depth_ok("a: \"multi\n  [[[[ line\"\n", 0));
        assert!(depth_ok("data:\n  f: |\n    [[[[\n\n    {{{{\n  g: x\n", 0));
        assert!(depth_ok("- k: >-\n    [[[[\n", 0));
        assert!(depth_ok("path: ^/a[0-9]+$\n", 0));
    }

    #[test]
    fn never_counts_too_shallow() {
        // A line less indented than the block scalar's first line ends it.
        assert!(!depth_ok("- k: |\n      x\n  o: [[[\n", 2));
        // The owner's column, not the dash's, bounds a block scalar.
        assert!(!depth_ok("- k: |\n  o: [[[\n", 2));
        // Anchors and tags before a collection.
        assert!(!depth_ok("a: &x [[[\n", 2));
        assert!(!depth_ok("a: !!seq [[[\n", 2));
        // A quote inside a plain scalar opens nothing.
        assert!(!depth_ok("a: b \"c\nd: [[[\n", 2));
        assert!(!depth_ok("a: b - \"c\nd: [[[\n", 2));
    }
}
