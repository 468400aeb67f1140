//! Bounds the messages we write into status: the CRDs cap a condition's
//! `message` at 32,768 characters, and one longer message fails the whole
//! status write, exactly when it matters (a push failed with Kengine's
//! full error body). Event notes have a tighter bound, in bytes.

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

/// The API server refuses an events.k8s.io/v1 Event whose `note` is
/// longer than this many bytes (its validation's 1 KiB), so the Warning
/// would be lost exactly when a push failed with a long error.
pub const EVENT_NOTE_BYTES: usize = 1024;

/// `note` cut to [`EVENT_NOTE_BYTES`] bytes, saying so, never splitting a
/// character.
pub fn event_note(note: &str) -> String {
    bounded_bytes(note, EVENT_NOTE_BYTES)
}

/// `message` with at most `max` bytes (UTF-8); a longer one keeps its
/// start and says it was cut.
pub fn bounded_bytes(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let room = if max > CUT.len() {
        max - CUT.len()
    } else {
        max
    };
    let end = (0..=room)
        .rev()
        .find(|&i| message.is_char_boundary(i))
        .unwrap_or(0);
    if room == max {
        return message[..end].to_string();
    }
    format!("{}{CUT}", &message[..end])
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
    fn event_notes_are_cut_in_bytes_on_a_character_boundary() {
        assert_eq!(event_note("short"), "short");
        let exact = "x".repeat(EVENT_NOTE_BYTES);
        assert_eq!(event_note(&exact), exact);
        // Three-byte characters: 1,024 is not a boundary after the cut.
        let long = "€".repeat(2_000);
        let note = event_note(&long);
        assert!(note.len() <= EVENT_NOTE_BYTES, "{}", note.len());
        assert!(note.len() > EVENT_NOTE_BYTES - 3 - CUT.len());
        assert!(note.ends_with(CUT));
        assert!(long.starts_with(note.trim_end_matches(CUT)));
        assert_eq!(bounded_bytes("abcdéf", 5), "abcd", "no room for the note");
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
