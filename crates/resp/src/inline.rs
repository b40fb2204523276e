//! Splitting an inline command line into arguments with Redis's quoting rules (`sdssplitargs`).
//! It must never allocate beyond growing the request's reused scratch buffer, and never accept
//! a line Redis would refuse.

use crate::error::ProtocolError;

/// C's `isspace`: the bytes skipped between arguments.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits `line` (without its line terminator) into arguments, written unescaped into
/// `scratch` (cleared first) with their ranges appended to `spans`.
///
/// Rules, as in Redis: arguments are separated by spaces, tabs, CR and LF (any C `isspace`
/// before an argument); `"..."` understands `\n \r \t \b \a \\ \" \xHH` and keeps any other
/// escaped byte as itself; `'...'` understands only `\'`; a quote may open in the middle of
/// an argument; a closing quote must be followed by a space or the end of the line; a NUL byte
/// ends the line.
///
/// # Errors
///
/// [`ProtocolError::UnbalancedQuotes`] for an unterminated quote or a closing quote followed
/// by something other than a space.
pub(crate) fn split_args(
    line: &[u8],
    scratch: &mut Vec<u8>,
    spans: &mut Vec<(usize, usize)>,
) -> Result<(), ProtocolError> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => line.get(..nul).unwrap_or_default(),
        None => line,
    };
    scratch.clear();
    let mut i = 0;
    loop {
        while line.get(i).is_some_and(|&b| is_space(b)) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(());
        }
        let start = scratch.len();
        i = split_one(line, i, scratch)?;
        spans.push((start, scratch.len()));
    }
}

/// Reads one argument starting at `line[i]` into `scratch`; returns where the next begins.
fn split_one(line: &[u8], mut i: usize, scratch: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    #[derive(PartialEq)]
    enum Mode {
        Bare,
        Double,
        Single,
    }
    let closes = |next: Option<&u8>| match next {
        None => Ok(()),
        Some(&b) if is_space(b) => Ok(()),
        Some(_) => Err(ProtocolError::UnbalancedQuotes),
    };
    let mut mode = Mode::Bare;
    loop {
        let Some(&b) = line.get(i) else {
            return match mode {
                Mode::Bare => Ok(i),
                _ => Err(ProtocolError::UnbalancedQuotes),
            };
        };
        match mode {
            Mode::Bare => match b {
                b' ' | b'\n' | b'\r' | b'\t' => return Ok(i + 1),
                b'"' => mode = Mode::Double,
                b'\'' => mode = Mode::Single,
                _ => scratch.push(b),
            },
            Mode::Double => match (b, line.get(i + 1).copied()) {
                (b'\\', Some(b'x')) => {
                    let high = line.get(i + 2).copied().and_then(hex_value);
                    let low = line.get(i + 3).copied().and_then(hex_value);
                    if let (Some(high), Some(low)) = (high, low) {
                        scratch.push(high << 4 | low);
                        i += 3;
                    } else {
                        scratch.push(b'x');
                        i += 1;
                    }
                }
                (b'\\', Some(escaped)) => {
                    scratch.push(match escaped {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    i += 1;
                }
                (b'"', next) => {
                    closes(next.as_ref())?;
                    return Ok(i + 1);
                }
                _ => scratch.push(b),
            },
            Mode::Single => match (b, line.get(i + 1).copied()) {
                (b'\\', Some(b'\'')) => {
                    scratch.push(b'\'');
                    i += 1;
                }
                (b'\'', next) => {
                    closes(next.as_ref())?;
                    return Ok(i + 1);
                }
                _ => scratch.push(b),
            },
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let mut scratch = Vec::new();
        let mut spans = Vec::new();
        split_args(line, &mut scratch, &mut spans)?;
        Ok(spans.iter().map(|&(s, e)| scratch[s..e].to_vec()).collect())
    }

    fn words(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn bare_words_split_on_spaces_and_tabs() {
        assert_eq!(
            split(b"  SET\tkey  value "),
            Ok(words(&["SET", "key", "value"]))
        );
        assert_eq!(split(b"   "), Ok(vec![]));
        assert_eq!(split(b""), Ok(vec![]));
    }

    #[test]
    fn double_quotes_understand_c_escapes_and_hex_bytes() {
        assert_eq!(
            split(br#"SET "a b" "\n\r\t\b\a\\\"\x41\x4a\q""#),
            Ok(vec![
                b"SET".to_vec(),
                b"a b".to_vec(),
                b"\n\r\t\x08\x07\\\"AJq".to_vec()
            ])
        );
        assert_eq!(split(br#""\xZZ""#), Ok(vec![b"xZZ".to_vec()]));
        assert_eq!(split(br#""""#), Ok(vec![vec![]]));
    }

    #[test]
    fn single_quotes_understand_only_escaped_single_quotes() {
        assert_eq!(split(br"'it\'s \n'"), Ok(vec![br"it's \n".to_vec()]));
    }

    #[test]
    fn a_quote_may_open_inside_a_word() {
        assert_eq!(split(br#"ab"c d"  e"#), Ok(words(&["abc d", "e"])));
    }

    #[test]
    fn unterminated_quotes_are_unbalanced() {
        assert_eq!(split(br#"SET "abc"#), Err(ProtocolError::UnbalancedQuotes));
        assert_eq!(split(b"SET 'abc"), Err(ProtocolError::UnbalancedQuotes));
        assert_eq!(
            split(br#"SET "abc\""#),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn closing_quote_followed_by_a_non_space_is_unbalanced() {
        assert_eq!(split(br#""a"b"#), Err(ProtocolError::UnbalancedQuotes));
        assert_eq!(split(br"'a'b"), Err(ProtocolError::UnbalancedQuotes));
    }

    #[test]
    fn a_nul_byte_ends_the_line_like_in_redis() {
        assert_eq!(split(b"PING\0 ignored"), Ok(words(&["PING"])));
        assert_eq!(
            split(b"ECHO \"a\0b\""),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn vertical_tab_and_form_feed_separate_only_before_a_word() {
        assert_eq!(split(b"\x0bA\x0bB"), Ok(vec![b"A\x0bB".to_vec()]));
    }
}
