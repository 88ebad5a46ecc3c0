//! What a message may hold. Characters that display nothing, or that
//! change how the text around them displays, are stripped: controls (but
//! the newline; a tab becomes a space), bidirectional overrides and
//! isolates (which make a message read differently from what it says),
//! zero-width spaces, word joiners, byte-order marks and soft hyphens. The
//! zero-width joiner and variation selectors stay: emoji sequences need
//! them. A message left with nothing visible is empty; a run of more than
//! [`MAX_COMBINING_RUN`] combining marks on one character (a "zalgo"
//! flood that spills over the lines around it) is refused.

use crate::GateError;

/// Combining marks allowed on one character (Vietnamese stacks two; real
/// scripts stay well below this).
pub const MAX_COMBINING_RUN: usize = 8;

/// Characters removed from every message.
fn is_stripped(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{ad}'                      // soft hyphen
        | '\u{61c}'                     // Arabic letter mark
        | '\u{180e}'                    // Mongolian vowel separator
        | '\u{200b}' | '\u{200e}' | '\u{200f}' // zero-width space, LRM, RLM
        | '\u{202a}'..='\u{202e}'       // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}'       // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}'       // bidi isolates
        | '\u{feff}'                    // byte-order mark
    )
}

/// Combining marks (the blocks floods are made of).
fn is_combining(c: char) -> bool {
    matches!(c,
        '\u{300}'..='\u{36f}' | '\u{483}'..='\u{489}' | '\u{1ab0}'..='\u{1aff}'
        | '\u{1dc0}'..='\u{1dff}' | '\u{20d0}'..='\u{20ff}' | '\u{fe20}'..='\u{fe2f}'
    )
}

/// Shows nothing by itself.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || c == '\u{200d}'
        || ('\u{fe00}'..='\u{fe0f}').contains(&c)
        || is_combining(c)
}

/// The message as it will be stored: stripped, trimmed, checked.
pub fn clean_message(text: &str) -> Result<String, GateError> {
    let mut out = String::with_capacity(text.len());
    let mut run = 0;
    for c in text.chars() {
        if c == '\t' {
            out.push(' ');
            run = 0;
            continue;
        }
        if is_stripped(c) {
            continue;
        }
        if is_combining(c) {
            run += 1;
            if run > MAX_COMBINING_RUN {
                return Err(GateError::BadMessage(format!(
                    "message has more than {MAX_COMBINING_RUN} combining marks on one character"
                )));
            }
        } else {
            run = 0;
        }
        out.push(c);
    }
    let trimmed = out.trim();
    if trimmed.chars().all(is_invisible) {
        return Err(GateError::EmptyMessage);
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_and_direction_changing_characters_are_stripped() {
        assert_eq!(
            clean_message("pay \u{202e}gnp.exe\u{202c} now").unwrap(),
            "pay gnp.exe now"
        );
        assert_eq!(clean_message("a\u{200b}b\u{feff}c\u{7}").unwrap(), "abc");
        assert_eq!(
            clean_message("col1\tcol2\nline 2").unwrap(),
            "col1 col2\nline 2"
        );
    }

    #[test]
    fn emoji_sequences_and_accents_stay() {
        let family = "👨\u{200d}👩\u{200d}👧 ❤\u{fe0f}";
        assert_eq!(clean_message(family).unwrap(), family);
        assert_eq!(
            clean_message("Tiê\u{301}ng Viê\u{323}\u{302}t").unwrap(),
            "Tiê\u{301}ng Viê\u{323}\u{302}t"
        );
    }

    #[test]
    fn nothing_visible_is_empty_and_floods_are_refused() {
        for blank in [
            "\u{200b}\u{200b}",
            "\u{202e}\u{2066}",
            " \u{200d} ",
            "\u{fe0f}",
            "\u{301}\u{301}",
        ] {
            assert_eq!(
                clean_message(blank),
                Err(GateError::EmptyMessage),
                "{blank:?}"
            );
        }
        let zalgo = format!("h{}i", "\u{300}\u{301}\u{302}".repeat(4));
        assert!(
            matches!(clean_message(&zalgo), Err(GateError::BadMessage(m)) if m.contains("combining"))
        );
    }
}
