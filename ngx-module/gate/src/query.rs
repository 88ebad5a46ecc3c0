//! Reading one parameter from a URL query string.

/// The percent-decoded value of `name` in `uri`'s query, if present and
/// valid UTF-8. `+` stands for a space, as in HTML forms.
pub fn query_param(uri: &[u8], name: &str) -> Option<String> {
    let query = &uri[uri.iter().position(|&b| b == b'?')? + 1..];
    let query = query.split(|&b| b == b'#').next().unwrap_or_default();
    query.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (percent_decode(key)? == name.as_bytes())
            .then(|| percent_decode(value))?
            .and_then(|v| String::from_utf8(v).ok())
    })
}

/// `args` (a query string without `?`) without the `name` parameters
/// whose decoded value `drop` says to drop; `None` if nothing was dropped.
pub fn without_param(args: &[u8], name: &str, drop: impl Fn(&str) -> bool) -> Option<Vec<u8>> {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut dropped = false;
    for pair in args.split(|&b| b == b'&') {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        let matches = percent_decode(key).is_some_and(|k| k == name.as_bytes())
            && percent_decode(value)
                .and_then(|v| String::from_utf8(v).ok())
                .is_some_and(|v| drop(&v));
        if matches {
            dropped = true;
        } else {
            kept.push(pair);
        }
    }
    dropped.then(|| kept.join(&b'&'))
}

fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                let hex = input.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_decodes_parameters() {
        let uri = b"/sub/lobby?x=1&token=a.b%2Ec&last_event_id=5";
        assert_eq!(query_param(uri, "token").as_deref(), Some("a.b.c"));
        assert_eq!(query_param(uri, "x").as_deref(), Some("1"));
        assert_eq!(query_param(uri, "missing"), None);
        assert_eq!(query_param(b"/sub/lobby", "token"), None);
        assert_eq!(query_param(b"/s?token=", "token").as_deref(), Some(""));
        assert_eq!(query_param(b"/s?token=%zz", "token"), None);
        assert_eq!(query_param(b"/s?a=b+c", "a").as_deref(), Some("b c"));
    }

    #[test]
    fn drops_only_the_parameters_asked_for() {
        let stale = |v: &str| v.starts_with("1:");
        assert_eq!(
            without_param(b"token=t&last_event_id=1%3A4&x=1", "last_event_id", stale).as_deref(),
            Some(&b"token=t&x=1"[..])
        );
        assert_eq!(
            without_param(b"last_event_id=2:0", "last_event_id", stale),
            None
        );
        assert_eq!(without_param(b"", "last_event_id", stale), None);
        assert_eq!(
            without_param(b"last_event_id=1:0", "last_event_id", stale).as_deref(),
            Some(&b""[..])
        );
    }
}
