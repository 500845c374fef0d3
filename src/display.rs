//! How names and paths appear in logs: readable, one line, nothing lost.
//!
//! Names are bytes. Valid UTF-8 is shown as is; invalid bytes, control characters and
//! backslashes are escaped (`\xff`, `\n`, `\\`), so a name with a newline cannot forge a
//! log line and two different names never print alike.

use std::fmt;

/// Displays a file name given as bytes.
#[derive(Debug, Clone, Copy)]
pub struct Name<'a>(pub &'a [u8]);

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\t' => f.write_str("\\t")?,
                    '\r' => f.write_str("\\r")?,
                    c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                    c => write!(f, "{c}")?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Name;

    #[test]
    fn escapes() {
        assert_eq!(Name(b"plain-1.0.tar.gz").to_string(), "plain-1.0.tar.gz");
        assert_eq!(Name(b"a\nb").to_string(), "a\\nb");
        assert_eq!(Name(b"\xff\xfeok").to_string(), "\\xff\\xfeok");
        assert_eq!(Name(b"back\\slash").to_string(), "back\\\\slash");
        assert_eq!(
            Name("caf\u{e9} 'q' \"d\"".as_bytes()).to_string(),
            "caf\u{e9} 'q' \"d\""
        );
        assert_eq!(Name(b"\x1b[31m").to_string(), "\\u{1b}[31m");
    }
}
