//! Base64 in Secret `data` and ConfigMap `binaryData`, accepted as the API
//! server accepts it: Go's `encoding/json` decodes `[]byte` with
//! `base64.StdEncoding`, which skips `\r` and `\n` anywhere (so wrapped
//! `base64` output is fine), requires `=` padding, and does not check the
//! unused bits of the last character.

use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;

const GO_STD_ENCODING: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Rewrites every value of the object's `field` map into canonical base64
/// (what our typed structs decode). Errs naming the first key that Go
/// would not decode either.
pub fn canonicalize(object: &mut Value, field: &str) -> Result<(), String> {
    let Some(map) = object.get_mut(field).and_then(Value::as_object_mut) else {
        return Ok(());
    };
    for (key, value) in map.iter_mut() {
        let Value::String(text) = value else { continue };
        let bytes = decode(text).map_err(|e| format!("{field}[{key:?}] is not base64: {e}"))?;
        *text = base64::engine::general_purpose::STANDARD.encode(bytes);
    }
    Ok(())
}

/// Decodes like Go's `base64.StdEncoding.DecodeString`.
pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'\r' && *b != b'\n')
        .collect();
    GO_STD_ENCODING.decode(compact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_go_accepts() {
        // `base64` wraps at 76 columns; `-w 0` does not.
        assert_eq!(decode("aGVsbG8g\nd29ybGQ=\n").unwrap(), b"hello world");
        assert_eq!(decode("aGVs\r\nbG8=").unwrap(), b"hello");
        assert_eq!(decode("").unwrap(), b"");
        // Go does not check the last character's unused bits.
        assert_eq!(decode("aGVsbG9=").unwrap(), b"hello");
    }

    #[test]
    fn rejects_what_go_rejects() {
        assert!(decode("aGVsbG8").is_err(), "padding is required");
        assert!(decode("aGVs bG8=").is_err(), "only CR and LF are skipped");
        assert!(decode("aGVsbG8_").is_err(), "not the URL alphabet");
    }

    #[test]
    fn canonicalizes_in_place_and_names_the_key() {
        let mut secret = serde_json::json!({"data": {"a": "aGVs\nbG8=", "b": null}});
        canonicalize(&mut secret, "data").unwrap();
        assert_eq!(secret["data"]["a"], "aGVsbG8=");
        let mut bad = serde_json::json!({"binaryData": {"k": "!!"}});
        let e = canonicalize(&mut bad, "binaryData").unwrap_err();
        assert!(e.starts_with("binaryData[\"k\"] is not base64"), "{e}");
    }
}
