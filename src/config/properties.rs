//! Java `.properties` files, the format of Kafka's `server.properties`, so a Kafka user can bring
//! the file they have (`ringbroker serve --config server.properties`).
//!
//! Owner: `Config::load` on the main thread, once, before any shard starts. Pure text in,
//! `(key, value)` pairs out, in file order; the keys are then checked like any other source's
//! (an unknown key is the same one-line error as in TOML).
//!
//! The rules are those of `java.util.Properties.load`, which Kafka uses:
//! - a line whose first non-blank character is `#` or `!` is a comment; blank lines are skipped;
//! - the key ends at the first unescaped `=`, `:` or whitespace; blanks around that separator,
//!   and one `=` or `:` after blanks, are skipped; the rest of the line is the value;
//! - a line ending in an odd number of backslashes continues on the next, whose leading blanks
//!   are dropped;
//! - `\t`, `\n`, `\r`, `\f` and `\uXXXX` are escapes; a backslash before any other character
//!   stands for that character (so `\=`, `\:`, `\ ` and `\\` put them into keys).
//!
//! Unlike Java, a malformed `\u` escape is an error naming its line (Java throws too), and a key
//! given twice keeps the later value, as Java's `Properties` does.

/// A `.properties` text that cannot be read; `Display` is one line naming the line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct PropertiesError {
    /// 1-based line where the logical line starts.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Parses `text` into `(key, value)` pairs in file order.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, PropertiesError> {
    let mut pairs = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, first)) = lines.next() {
        let start = first.trim_start_matches([' ', '\t', '\u{c}']);
        if start.is_empty() || start.starts_with('#') || start.starts_with('!') {
            continue;
        }
        // Join continuation lines: an odd number of trailing backslashes.
        let mut logical = String::from(start);
        while ends_in_continuation(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start_matches([' ', '\t', '\u{c}'])),
                None => break,
            }
        }
        let line = index + 1;
        let (key, value) = split_key_value(&logical);
        let key = unescape(key).map_err(|reason| PropertiesError { line, reason })?;
        let value = unescape(value).map_err(|reason| PropertiesError { line, reason })?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn ends_in_continuation(line: &str) -> bool {
    line.bytes().rev().take_while(|b| *b == b'\\').count() % 2 == 1
}

/// Splits a logical line (leading blanks already gone) into its raw key and raw value.
fn split_key_value(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut at = 0;
    let mut escaped = false;
    while at < bytes.len() {
        let b = bytes[at];
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if matches!(b, b'=' | b':' | b' ' | b'\t' | b'\x0c') {
            break;
        }
        at += 1;
    }
    let key = &line[..at];
    let mut rest = line[at..].trim_start_matches([' ', '\t', '\u{c}']);
    if let Some(after) = rest.strip_prefix(['=', ':']) {
        rest = after.trim_start_matches([' ', '\t', '\u{c}']);
    }
    (key, rest)
}

fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("malformed \\u escape '\\u{hex}'"))?;
                out.push(code);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap()
    }

    fn pair(key: &str, value: &str) -> (String, String) {
        (key.to_string(), value.to_string())
    }

    #[test]
    fn a_kafka_server_properties_file() {
        let text = "\
# The id of the broker.
node.id=1
! another comment style
process.roles = broker,controller
listeners=PLAINTEXT://:9092,CONTROLLER://:9093
log.dirs:/tmp/kraft-combined-logs

num.partitions 3
   socket.request.max.bytes   =   1048576
";
        assert_eq!(
            pairs(text),
            vec![
                pair("node.id", "1"),
                pair("process.roles", "broker,controller"),
                pair("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
                pair("log.dirs", "/tmp/kraft-combined-logs"),
                pair("num.partitions", "3"),
                pair("socket.request.max.bytes", "1048576"),
            ]
        );
    }

    #[test]
    fn continuations_escapes_and_empty_values() {
        let text = "\
controller.quorum.voters=1@127.0.0.1:9093,\\
    2@127.0.0.1:9193
key\\=with\\:seps\\ x = a\\tb\\u0041
empty=
bare
";
        assert_eq!(
            pairs(text),
            vec![
                pair(
                    "controller.quorum.voters",
                    "1@127.0.0.1:9093,2@127.0.0.1:9193"
                ),
                pair("key=with:seps x", "a\tbA"),
                pair("empty", ""),
                pair("bare", ""),
            ]
        );
        // An even number of trailing backslashes is an escaped backslash, not a continuation.
        assert_eq!(
            pairs("a=b\\\\\nc=d"),
            vec![pair("a", "b\\"), pair("c", "d")]
        );
        // A value may itself start with a separator character after the first one.
        assert_eq!(pairs("a==b"), vec![pair("a", "=b")]);
    }

    #[test]
    fn a_bad_unicode_escape_names_its_line() {
        let err = parse("a=1\nb=\\u00zz\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.to_string().starts_with("line 2: malformed \\u escape"));
        assert!(parse("a=\\u12").is_err());
    }
}
