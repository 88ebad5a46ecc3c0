//! The body of a chat POST: `{"msg": "..."}`.

use serde_json::Value;

use crate::GateError;

/// Reads the message text from a POST body: valid UTF-8, a JSON object with
/// a string `msg`, cleaned (`text::clean_message`: invisible and
/// direction-changing characters stripped, trimmed, not empty), at most
/// `max_chars` characters (Unicode scalar values).
pub fn parse_message(body: &[u8], max_chars: usize) -> Result<String, GateError> {
    let text = std::str::from_utf8(body).map_err(|_| GateError::InvalidUtf8)?;
    let value: Value = serde_json::from_str(text).map_err(|e| GateError::BadJson(e.to_string()))?;
    let expected = || GateError::BadJson("expected an object {\"msg\": \"...\"}".into());
    let msg = value
        .as_object()
        .ok_or_else(expected)?
        .get("msg")
        .ok_or_else(expected)?;
    let msg = msg
        .as_str()
        .ok_or_else(|| GateError::BadJson("msg must be a string".into()))?;
    let msg = crate::text::clean_message(msg)?;
    if msg.chars().count() > max_chars {
        return Err(GateError::MessageTooLong { max: max_chars });
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_trims_a_message() {
        assert_eq!(
            parse_message(br#"{"msg":"  hello  "}"#, 10).unwrap(),
            "hello"
        );
        assert_eq!(
            parse_message("{\"msg\":\"héllo ✓\"}".as_bytes(), 7).unwrap(),
            "héllo ✓"
        );
    }

    #[test]
    fn refuses_bad_bodies() {
        assert_eq!(parse_message(b"\xff\xfe", 10), Err(GateError::InvalidUtf8));
        assert!(matches!(
            parse_message(b"not json", 10),
            Err(GateError::BadJson(_))
        ));
        assert!(matches!(
            parse_message(b"[1]", 10),
            Err(GateError::BadJson(_))
        ));
        assert!(matches!(
            parse_message(br#"{"text":"x"}"#, 10),
            Err(GateError::BadJson(_))
        ));
        assert!(matches!(
            parse_message(br#"{"msg":5}"#, 10),
            Err(GateError::BadJson(_))
        ));
        assert_eq!(
            parse_message(br#"{"msg":" \n\t "}"#, 10),
            Err(GateError::EmptyMessage)
        );
        assert_eq!(
            parse_message(br#"{"msg":"abcdef"}"#, 5),
            Err(GateError::MessageTooLong { max: 5 })
        );
        // Length counts characters, not bytes.
        assert!(parse_message("{\"msg\":\"ééééé\"}".as_bytes(), 5).is_ok());
    }
}
