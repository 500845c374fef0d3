//! Shell-style glob patterns matched against file names as bytes (`fnmatch(3)` without
//! flags, on one path component): `*`, `?`, `[abc]`, `[a-z]`, `[!x]`, and `\` to escape.

use std::fmt;

/// A compiled pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Byte(u8),
    Any,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError {
    pub pattern: String,
    pub reason: &'static str,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad ignore pattern {:?}: {}", self.pattern, self.reason)
    }
}

impl std::error::Error for GlobError {}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.source)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Glob {
    /// Compiles `pattern`. Patterns apply to one name, so `/` is refused.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let err = |reason| GlobError {
            pattern: pattern.to_owned(),
            reason,
        };
        if pattern.is_empty() {
            return Err(err("empty pattern"));
        }
        if pattern.contains('/') {
            return Err(err("patterns match file names, which never contain '/'"));
        }
        let bytes = pattern.as_bytes();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                b'?' => tokens.push(Token::Any),
                b'\\' => {
                    i += 1;
                    let &b = bytes.get(i).ok_or_else(|| err("trailing backslash"))?;
                    tokens.push(Token::Byte(b));
                }
                b'[' => {
                    let (token, next) =
                        parse_class(bytes, i + 1).ok_or_else(|| err("unclosed '['"))?;
                    tokens.push(token);
                    i = next;
                    continue;
                }
                b => tokens.push(Token::Byte(b)),
            }
            i += 1;
        }
        Ok(Glob {
            source: pattern.to_owned(),
            tokens,
        })
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &[u8]) -> bool {
        // Iterative matcher with single backtrack point for the last `*` (linear-ish, no
        // recursion, so a hostile name cannot blow the stack).
        let (mut t, mut n) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.tokens.get(t) {
                Some(Token::Star) => {
                    star = Some((t, n));
                    t += 1;
                    continue;
                }
                Some(tok) if tok.matches_byte(name[n]) => {
                    t += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                Some((st, sn)) => {
                    t = st + 1;
                    n = sn + 1;
                    star = Some((st, sn + 1));
                }
                None => return false,
            }
        }
        self.tokens[t..].iter().all(|tok| *tok == Token::Star)
    }
}

impl Token {
    fn matches_byte(&self, b: u8) -> bool {
        match self {
            Token::Byte(x) => *x == b,
            Token::Any => true,
            Token::Star => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= b && b <= hi) != *negated
            }
        }
    }
}

/// Parses a bracket expression starting after `[`; returns the token and the index after `]`.
fn parse_class(bytes: &[u8], mut i: usize) -> Option<(Token, usize)> {
    let negated = matches!(bytes.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let b = *bytes.get(i)?;
        if b == b']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        let lo = if b == b'\\' {
            i += 1;
            *bytes.get(i)?
        } else {
            b
        };
        if bytes.get(i + 1) == Some(&b'-') && bytes.get(i + 2).is_some_and(|&c| c != b']') {
            let hi = bytes[i + 2];
            ranges.push((lo.min(hi), lo.max(hi)));
            i += 3;
        } else {
            ranges.push((lo, lo));
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &[u8]) -> bool {
        Glob::new(p).unwrap().matches(n)
    }

    #[test]
    fn stars_and_questions() {
        assert!(m("*.part", b"foo.part"));
        assert!(m("*.part", b".part"));
        assert!(!m("*.part", b"foo.part2"));
        assert!(m("a*b*c", b"aXXbYYc"));
        assert!(!m("a*b*c", b"aXXbYY"));
        assert!(m("?oo", b"foo"));
        assert!(!m("?oo", b"fooo"));
        assert!(m("*", b""));
        assert!(m("**x", b"abx"));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(m("[abc]x", b"bx"));
        assert!(!m("[!abc]x", b"bx"));
        assert!(m("[a-c]", b"b"));
        assert!(m("[]]", b"]"));
        assert!(m("x[-]", b"x-"));
        assert!(m("\\*", b"*"));
        assert!(!m("\\*", b"a"));
    }

    #[test]
    fn bytes_beyond_utf8() {
        assert!(m("*.tar*", b"\xff\xfe.tar.gz"));
    }

    #[test]
    fn bad_patterns() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("a/b").is_err());
        assert!(Glob::new("[abc").is_err());
        assert!(Glob::new("x\\").is_err());
    }

    #[test]
    fn pathological_pattern_is_fast_enough() {
        let g = Glob::new("*a*a*a*a*a*a*a*b").unwrap();
        assert!(!g.matches(&[b'a'; 255]));
    }
}
