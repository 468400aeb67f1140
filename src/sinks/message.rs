//! Bounds the messages we write into status and Events: the CRDs cap a
//! condition's `message` at 32,768 characters, the API server an Event's
//! `note` at 1,024 bytes, and one longer message fails the whole write,
//! exactly when it matters (a push failed with Kengine's full error body).

use serde_json::Value;

/// `maxLength` of `message` in the Gateway API and KengineInstance CRDs
/// (characters, not bytes).
pub const MAX_CHARS: usize = 32_768;

const CUT: &str = " … (truncated)";

/// `message` with at most `max` characters; a longer one keeps its start
/// and says it was cut. Never splits a character.
pub fn bounded(message: &str, max: usize) -> String {
    match message.char_indices().nth(max) {
        None => message.to_string(),
        Some((at_max, _)) => {
            let cut = CUT.chars().count();
            if max <= cut {
                return message[..at_max].to_string();
            }
            let end = message
                .char_indices()
                .nth(max - cut)
                .map_or(message.len(), |(i, _)| i);
            format!("{}{CUT}", &message[..end])
        }
    }
}

/// The API server's limit on an Event's `note` (events.k8s.io/v1), in
/// bytes: a longer note makes the whole Event invalid (422).
pub const EVENT_NOTE_MAX_BYTES: usize = 1024;

/// `message` in at most `max` bytes of UTF-8; a longer one keeps its start
/// and says it was cut. Never splits a character.
pub fn bounded_bytes(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let floor = |at: usize| (0..=at).rev().find(|&i| message.is_char_boundary(i));
    if max < CUT.len() {
        return message[..floor(max).unwrap_or(0)].to_string();
    }
    format!("{}{CUT}", &message[..floor(max - CUT.len()).unwrap_or(0)])
}

/// Bounds every string field named `message` in a status, at any depth
/// (conditions of Gateways, listeners, route parents, KengineInstance pods).
pub fn bound_all(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(s) if key == "message" && s.chars().nth(MAX_CHARS).is_some() => {
                        *s = bounded(s, MAX_CHARS);
                    }
                    _ => bound_all(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(bound_all),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_messages_are_kept() {
        assert_eq!(bounded("", 10), "");
        assert_eq!(bounded("exactly 10", 10), "exactly 10");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        // Multi-byte characters: a byte cut would split one.
        let long = "é€😀".repeat(20_000);
        let cut = bounded(&long, MAX_CHARS);
        assert_eq!(cut.chars().count(), MAX_CHARS);
        assert!(cut.ends_with(CUT));
        assert!(long.starts_with(cut.trim_end_matches(CUT)));
        assert_eq!(bounded("abcdéf", 5), "abcdé", "no room for the note");
    }

    #[test]
    fn event_notes_are_bounded_in_bytes() {
        assert_eq!(bounded_bytes("short", EVENT_NOTE_MAX_BYTES), "short");
        // Two bytes a character: a character bound of 1,024 would be 2,048 bytes.
        let long = "é".repeat(70_000);
        let cut = bounded_bytes(&long, EVENT_NOTE_MAX_BYTES);
        assert!(cut.len() <= EVENT_NOTE_MAX_BYTES, "{}", cut.len());
        assert!(cut.len() > EVENT_NOTE_MAX_BYTES - CUT.len() - 2);
        assert!(cut.ends_with(CUT));
        assert!(long.starts_with(cut.trim_end_matches(CUT)));
        assert_eq!(bounded_bytes("abcé", 4), "abc", "no room for the note");
    }

    #[test]
    fn every_message_of_a_status_is_bounded() {
        let body = "x".repeat(100_000);
        let mut status = serde_json::json!({
            "conditions": [{"type": "Programmed", "message": body}],
            "pods": [{"name": "p", "message": body}],
            "listeners": [{"conditions": [{"message": "short"}]}],
            "other": body,
        });
        bound_all(&mut status);
        assert_eq!(
            status["conditions"][0]["message"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            MAX_CHARS
        );
        assert_eq!(
            status["pods"][0]["message"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            MAX_CHARS
        );
        assert_eq!(status["listeners"][0]["conditions"][0]["message"], "short");
        assert_eq!(
            status["other"].as_str().unwrap().len(),
            100_000,
            "only messages"
        );
    }
}
