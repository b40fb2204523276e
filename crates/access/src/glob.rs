//! Glob patterns for key and channel permissions, in Redis's syntax (`*`, `?`, `[a-z]`, `[^a]`,
//! `\x`), checked once when the configuration is compiled and then matched against raw bytes.
//!
//! Must never allocate or recurse while matching: the proxy matches every key of every request
//! of a namespace-limited user. Semantics follow Redis's `stringmatchlen` (case-sensitive), so
//! a pattern means here what it means in a Redis ACL; patterns Redis would read in a surprising
//! way (an unterminated `[`, a trailing `\`) are refused instead.

use std::fmt;

/// Why a pattern was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is the empty string (it would match only an empty key: surely a mistake).
    #[error("empty pattern")]
    Empty,
    /// A `[` class never closed with `]`.
    #[error("`[` without a closing `]`")]
    UnterminatedClass,
    /// The last character is a lone `\`, which escapes nothing.
    #[error("a trailing `\\` escapes nothing")]
    TrailingBackslash,
}

/// A validated glob pattern with a shortcut for the shapes configurations use most.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    source: Box<[u8]>,
    shape: Shape,
}

/// How a pattern is matched: most are `*`, `prefix:*` or an exact name, and those need no glob
/// walk at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Only stars: matches everything.
    Everything,
    /// No special character: the subject must equal the source.
    Exact,
    /// A literal followed by one `*`: the subject must start with the literal.
    Prefix,
    /// Anything else.
    Glob,
}

impl Pattern {
    /// Checks `text` and picks its matching shortcut.
    pub(crate) fn parse(text: &str) -> Result<Pattern, PatternError> {
        let source = text.as_bytes();
        validate(source)?;
        let special = |b: &u8| matches!(b, b'*' | b'?' | b'[' | b'\\');
        let shape = if source.iter().all(|&b| b == b'*') {
            Shape::Everything
        } else if !source.iter().any(special) {
            Shape::Exact
        } else if let Some((b'*', literal)) = source.split_last()
            && !literal.iter().any(special)
        {
            Shape::Prefix
        } else {
            Shape::Glob
        };
        Ok(Pattern {
            source: source.into(),
            shape,
        })
    }

    /// The pattern as written.
    pub(crate) fn source(&self) -> &[u8] {
        &self.source
    }

    /// Whether the pattern matches every string.
    pub(crate) fn matches_everything(&self) -> bool {
        self.shape == Shape::Everything
    }

    /// Whether `subject` matches.
    #[inline]
    pub(crate) fn matches(&self, subject: &[u8]) -> bool {
        match self.shape {
            Shape::Everything => true,
            Shape::Exact => *self.source == *subject,
            Shape::Prefix => subject.starts_with(&self.source[..self.source.len() - 1]),
            Shape::Glob => glob_match(&self.source, subject),
        }
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.source))
    }
}

/// Refuses patterns whose reading would depend on Redis's recovery from malformed input.
fn validate(pattern: &[u8]) -> Result<(), PatternError> {
    if pattern.is_empty() {
        return Err(PatternError::Empty);
    }
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 == pattern.len() => return Err(PatternError::TrailingBackslash),
            b'\\' => i += 2,
            b'[' => i = class_end(pattern, i).ok_or(PatternError::UnterminatedClass)?,
            _ => i += 1,
        }
    }
    Ok(())
}

/// The index just past the `]` closing the class that opens at `open`; `None` when unclosed.
fn class_end(pattern: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if pattern.get(i) == Some(&b'^') {
        i += 1;
    }
    loop {
        match pattern.get(i)? {
            b'\\' if i + 1 < pattern.len() => i += 2,
            b']' => return Some(i + 1),
            // A range `x-y` consumes its end even when that is `]`, as Redis does.
            _ if i + 2 < pattern.len() && pattern[i + 1] == b'-' => i += 3,
            _ => i += 1,
        }
    }
}

/// Whether `subject` matches the glob `pattern`, with Redis's semantics.
///
/// Iterative: each pattern token but `*` consumes exactly one byte, so remembering only the
/// last `*` and retrying it one byte further on mismatch finds a match whenever one exists,
/// in O(pattern × subject) time and no memory.
pub(crate) fn glob_match(pattern: &[u8], subject: &[u8]) -> bool {
    let (mut p, mut s) = (0, 0);
    // (pattern index after the last `*`, subject index that `*` currently stops at)
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pattern.len() {
            if pattern[p] == b'*' {
                p += 1;
                star = Some((p, s));
                continue;
            }
            if let Some(&byte) = subject.get(s)
                && let Some(next) = match_one(pattern, p, byte)
            {
                p = next;
                s += 1;
                continue;
            }
        } else if s == subject.len() {
            return true;
        }
        // Mismatch: let the last `*` swallow one more byte, if there is one.
        match star {
            Some((after_star, stop)) if stop < subject.len() => {
                star = Some((after_star, stop + 1));
                p = after_star;
                s = stop + 1;
            }
            _ => return false,
        }
    }
}

/// Matches the single-byte token at `pattern[p]` (not `*`) against `byte`: the index after the
/// token when it matches, `None` when not.
#[inline]
fn match_one(pattern: &[u8], p: usize, byte: u8) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'[' => match_class(pattern, p, byte),
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == byte).then_some(p + 2),
        literal => (literal == byte).then_some(p + 1),
    }
}

/// Matches the class opening at `pattern[open]` against `byte`. An unclosed class (never
/// accepted by [`Pattern::parse`]) ends at the end of the pattern rather than panicking.
fn match_class(pattern: &[u8], open: usize, byte: u8) -> Option<usize> {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    loop {
        match pattern.get(i) {
            None => break,
            Some(b'\\') if i + 1 < pattern.len() => {
                hit |= pattern[i + 1] == byte;
                i += 2;
            }
            Some(b']') => {
                i += 1;
                break;
            }
            Some(&from) if i + 2 < pattern.len() && pattern[i + 1] == b'-' => {
                let to = pattern[i + 2];
                // Redis accepts reversed ranges (`[z-a]`) as the same range.
                let (low, high) = if from <= to { (from, to) } else { (to, from) };
                hit |= (low..=high).contains(&byte);
                i += 3;
            }
            Some(&literal) => {
                hit |= literal == byte;
                i += 1;
            }
        }
    }
    (hit != negate).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(pattern: &str, subject: &str) -> bool {
        Pattern::parse(pattern)
            .expect("valid pattern")
            .matches(subject.as_bytes())
    }

    #[test]
    fn shapes_are_recognised() {
        let shape = |p: &str| Pattern::parse(p).expect("valid").shape;
        assert_eq!(shape("*"), Shape::Everything);
        assert_eq!(shape("**"), Shape::Everything);
        assert_eq!(shape("orders"), Shape::Exact);
        assert_eq!(shape("orders:*"), Shape::Prefix);
        assert_eq!(shape("orders:*:x"), Shape::Glob);
        assert_eq!(shape("ord?rs:*"), Shape::Glob);
        assert_eq!(shape("a\\*"), Shape::Glob);
    }

    #[test]
    fn prefixes_stars_and_question_marks() {
        assert!(matches("orders:*", "orders:1"));
        assert!(matches("orders:*", "orders:"));
        assert!(!matches("orders:*", "order:1"));
        assert!(!matches("orders:*", "users:orders:1"));
        assert!(matches("*:1", "orders:1"));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b*c", "aXbYbZ"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exact2"));
        assert!(
            !matches("Orders:*", "orders:1"),
            "case-sensitive like Redis"
        );
    }

    #[test]
    fn classes_ranges_negation_and_escapes() {
        assert!(matches("user:[0-9]", "user:7"));
        assert!(!matches("user:[0-9]", "user:x"));
        assert!(matches("user:[9-0]", "user:7"), "reversed range");
        assert!(matches("[^a]b", "xb"));
        assert!(!matches("[^a]b", "ab"));
        assert!(matches("[abc]", "b"));
        assert!(matches("[a\\]]", "]"));
        assert!(matches("\\*", "*"));
        assert!(!matches("\\*", "x"));
        assert!(matches("a\\?", "a?"));
        assert!(!matches("a\\?", "ab"));
        assert!(!matches("[]x", "x"), "an empty class matches nothing");
    }

    #[test]
    fn malformed_patterns_are_refused() {
        assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
        assert_eq!(Pattern::parse("a["), Err(PatternError::UnterminatedClass));
        assert_eq!(Pattern::parse("[a-]"), Err(PatternError::UnterminatedClass));
        assert_eq!(Pattern::parse("a\\"), Err(PatternError::TrailingBackslash));
        assert!(
            Pattern::parse("[a-]]").is_ok(),
            "a range ending in `]`, then `]`"
        );
        assert!(Pattern::parse("\\[").is_ok());
    }

    #[test]
    fn matching_never_panics_on_malformed_patterns() {
        for pattern in ["[", "[^", "[a-", "\\", "a[b", "[\\"] {
            for subject in ["", "a", "[", "\\", "ab"] {
                let _ = glob_match(pattern.as_bytes(), subject.as_bytes());
            }
        }
    }

    /// One token of the reference reading of a pattern.
    #[derive(Debug)]
    enum Token {
        Star,
        AnyByte,
        Byte(u8),
        Class { negate: bool, ranges: Vec<(u8, u8)> },
    }

    /// The reference reading of a (valid) pattern: a token list, built independently of the
    /// matcher above.
    fn tokens(pattern: &[u8]) -> Vec<Token> {
        let mut out = Vec::new();
        let mut rest = pattern;
        while let Some((&first, tail)) = rest.split_first() {
            rest = tail;
            out.push(match first {
                b'*' => Token::Star,
                b'?' => Token::AnyByte,
                b'\\' => {
                    let (&escaped, tail) = rest.split_first().expect("validated");
                    rest = tail;
                    Token::Byte(escaped)
                }
                b'[' => {
                    let negate = rest.first() == Some(&b'^');
                    if negate {
                        rest = &rest[1..];
                    }
                    let mut ranges = Vec::new();
                    loop {
                        match rest {
                            [b'\\', c, tail @ ..] => {
                                ranges.push((*c, *c));
                                rest = tail;
                            }
                            [b']', tail @ ..] => {
                                rest = tail;
                                break;
                            }
                            [a, b'-', b, tail @ ..] => {
                                ranges.push(((*a).min(*b), (*a).max(*b)));
                                rest = tail;
                            }
                            [c, tail @ ..] => {
                                ranges.push((*c, *c));
                                rest = tail;
                            }
                            [] => panic!("validated"),
                        }
                    }
                    Token::Class { negate, ranges }
                }
                b => Token::Byte(b),
            });
        }
        out
    }

    /// The obvious recursive matcher over tokens.
    fn reference(tokens: &[Token], subject: &[u8]) -> bool {
        match tokens.split_first() {
            None => subject.is_empty(),
            Some((Token::Star, rest)) => {
                (0..=subject.len()).any(|i| reference(rest, &subject[i..]))
            }
            Some((token, rest)) => match subject.split_first() {
                None => false,
                Some((&byte, tail)) => {
                    let hit = match token {
                        Token::AnyByte => true,
                        Token::Byte(b) => *b == byte,
                        Token::Class { negate, ranges } => {
                            ranges.iter().any(|&(lo, hi)| lo <= byte && byte <= hi) != *negate
                        }
                        Token::Star => unreachable!(),
                    };
                    hit && reference(rest, tail)
                }
            },
        }
    }

    /// Patterns over a small alphabet so that matches are frequent.
    fn pattern_text() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("*".to_owned()),
            Just("?".to_owned()),
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just(":".to_owned()),
            Just("\\*".to_owned()),
            Just("\\a".to_owned()),
            Just("[ab]".to_owned()),
            Just("[^a]".to_owned()),
            Just("[a-c]".to_owned()),
            Just("[c-a:]".to_owned()),
            Just("[\\]a]".to_owned()),
        ];
        prop::collection::vec(token, 1..7).prop_map(|tokens| tokens.concat())
    }

    fn subject_text() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(b"ab:c*]".to_vec()), 0..10)
    }

    proptest! {
        #[test]
        fn glob_matching_agrees_with_a_recursive_reference(
            pattern in pattern_text(),
            subject in subject_text(),
        ) {
            let compiled = Pattern::parse(&pattern).expect("generated patterns are valid");
            let expected = reference(&tokens(pattern.as_bytes()), &subject);
            prop_assert_eq!(compiled.matches(&subject), expected, "pattern {:?}", pattern);
            prop_assert_eq!(glob_match(pattern.as_bytes(), &subject), expected);
        }

        #[test]
        fn any_bytes_never_panic(pattern in prop::collection::vec(any::<u8>(), 0..12),
                                 subject in prop::collection::vec(any::<u8>(), 0..12)) {
            let _ = glob_match(&pattern, &subject);
            if let Ok(text) = std::str::from_utf8(&pattern)
                && let Ok(compiled) = Pattern::parse(text)
            {
                prop_assert_eq!(compiled.matches(&subject), glob_match(&pattern, &subject));
            }
        }
    }
}
