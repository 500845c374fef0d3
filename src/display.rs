//! How names and paths appear in logs: readable, one line, nothing lost.
//!
//! Names are bytes. Valid UTF-8 is shown as is; invalid bytes, control characters,
//! invisible format characters and backslashes are escaped (`\xff`, `\n`, `\u{202e}`,
//! `\\`), so a name cannot forge a log line (a newline, a line or paragraph separator),
//! cannot make a line read as something else (bidirectional overrides and isolates,
//! zero-width characters) and two different names never print alike.

use std::fmt;

/// A byte count for people: `10 B`, `3.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A duration as configured: `0s`, `90s`, `30d`, `1.5h`.
pub fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    let (v, unit) = match s {
        s if s >= 86400.0 && s % 86400.0 == 0.0 => (s / 86400.0, "d"),
        s if s >= 3600.0 && s % 3600.0 == 0.0 => (s / 3600.0, "h"),
        s if s >= 60.0 && s % 60.0 == 0.0 => (s / 60.0, "m"),
        s if s > 0.0 && s < 1.0 => (s * 1000.0, "ms"),
        s => (s, "s"),
    };
    format!("{v}{unit}")
}

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
                    c if c.is_control() || invisible(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
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

/// Characters that change how the text around them reads, or are not seen at all:
/// Unicode's format characters (category Cf) and the line and paragraph separators
/// (Zl, Zp), which `char::is_control` does not cover.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'                    // soft hyphen
            | '\u{600}'..='\u{605}'  // Arabic number signs
            | '\u{61c}'              // Arabic letter mark
            | '\u{6dd}' | '\u{70f}' | '\u{890}'..='\u{891}' | '\u{8e2}'
            | '\u{180e}'             // Mongolian vowel separator
            | '\u{200b}'..='\u{200f}' // zero-width space, joiners, LRM, RLM
            | '\u{2028}'..='\u{202e}' // line/paragraph separators, bidi embeddings, overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{206f}' // bidi isolates, deprecated format characters
            | '\u{feff}'             // zero-width no-break space (BOM)
            | '\u{fff9}'..='\u{fffb}' // interlinear annotation
            | '\u{110bd}' | '\u{110cd}' | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}' | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}' | '\u{e0020}'..='\u{e007f}' // tags
    )
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

    /// A name that would read backwards, break the line or hide characters in a log.
    #[test]
    fn escapes_invisible_and_reordering_characters() {
        for (c, shown) in [
            ('\u{202e}', "\\u{202e}"),
            ('\u{2066}', "\\u{2066}"),
            ('\u{2067}', "\\u{2067}"),
            ('\u{2068}', "\\u{2068}"),
            ('\u{2069}', "\\u{2069}"),
            ('\u{2028}', "\\u{2028}"),
            ('\u{2029}', "\\u{2029}"),
            ('\u{200b}', "\\u{200b}"),
            ('\u{feff}', "\\u{feff}"),
            ('\u{85}', "\\u{85}"),
        ] {
            let name = format!("evil{c}gz.tar");
            assert_eq!(
                Name(name.as_bytes()).to_string(),
                format!("evil{shown}gz.tar")
            );
        }
        // Letters of other scripts stay readable.
        assert_eq!(Name("日本語-ü.tar".as_bytes()).to_string(), "日本語-ü.tar");
    }
}
