//! The principal of a TLS client: its certificate's subject DN in RFC 2253 form, mapped by
//! `ssl.principal.mapping.rules` to a name, as Kafka's `DefaultKafkaPrincipalBuilder` does
//! (`User:<name>`; `User:ANONYMOUS` without a certificate).
//!
//! Owner: built once per SSL listener at start (`PrincipalMapper::parse`), then shared
//! read-only by every shard; applied once per connection after its handshake. Pure: no I/O,
//! nothing awaited.
//!
//! The DN is written as Java's `X500Principal.getName(RFC2253)` writes it, which is what
//! Kafka's rules and ACLs see: RDNs last to first, joined by `,`; the AVAs of one RDN joined by
//! `+`; keywords for CN, C, L, ST, O, OU, STREET, DC and UID, the dotted OID otherwise; string
//! values with `,=+<>#;"\` escaped by a backslash (and a leading or trailing space), other
//! values (and every value of an OID without keyword) as `#` and the hex of their DER.
//!
//! The certificate is read with a small DER walker here rather than an X.509 crate: only the
//! subject is needed, rustls has verified the certificate (when a truststore checks it), and
//! every read is bounds-checked (a malformed certificate is an error, never a panic).
//!
//! Rules (Kafka's `SslPrincipalMapper`): a comma-separated list of `DEFAULT` (the DN itself)
//! and `RULE:pattern/replacement/` with an optional `L` or `U` (lower or upper case the result).
//! The first rule whose pattern matches the whole DN gives the name (every match replaced, `$1`
//! naming groups); no rule matching refuses the connection. Patterns are `regex` crate syntax,
//! which agrees with Java's for the usual rules (no look-around or back-references).

use regex::Regex;

/// Why a certificate has no usable subject, or no rule maps it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrincipalError {
    /// The certificate's DER could not be walked to its subject.
    #[error("malformed certificate: {0}")]
    Malformed(&'static str),
    /// No mapping rule matched the DN.
    #[error("no ssl.principal.mapping.rules rule matches the subject {0}")]
    NoRuleMatches(String),
}

/// A bad `ssl.principal.mapping.rules` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct RuleError(pub String);

/// One parsed rule.
#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace {
        /// The pattern anchored at both ends: whether the rule applies.
        whole: Regex,
        /// The pattern as written: what the replacement replaces.
        pattern: Regex,
        replacement: String,
        case: Case,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// `ssl.principal.mapping.rules`, parsed.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

impl PrincipalMapper {
    /// Parses a rule list.
    pub fn parse(text: &str) -> Result<PrincipalMapper, RuleError> {
        let mut rules = Vec::new();
        let bytes = text.as_bytes();
        let mut at = 0;
        loop {
            while at < bytes.len() && (bytes[at].is_ascii_whitespace() || bytes[at] == b',') {
                at += 1;
            }
            if at >= bytes.len() {
                break;
            }
            let rest = &text[at..];
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                at += "DEFAULT".len();
                expect_separator(after)?;
                continue;
            }
            let Some(body) = rest.strip_prefix("RULE:") else {
                return Err(RuleError(format!(
                    "'{}' is neither DEFAULT nor RULE:pattern/replacement/[LU]",
                    first_item(rest)
                )));
            };
            let (pattern, used) = until_slash(body)
                .ok_or_else(|| RuleError(format!("'{}' lacks its '/'", first_item(rest))))?;
            let (replacement, used2) = until_slash(&body[used..])
                .ok_or_else(|| RuleError(format!("'{}' lacks its last '/'", first_item(rest))))?;
            let mut end = "RULE:".len() + used + used2;
            let case = match rest[end..].chars().next() {
                Some('L') => {
                    end += 1;
                    Case::Lower
                }
                Some('U') => {
                    end += 1;
                    Case::Upper
                }
                _ => Case::Keep,
            };
            expect_separator(&rest[end..])?;
            let compile = |text: &str| {
                Regex::new(text).map_err(|err| RuleError(format!("pattern '{pattern}': {err}")))
            };
            rules.push(Rule::Replace {
                whole: compile(&format!("^(?:{pattern})$"))?,
                pattern: compile(&pattern)?,
                replacement: java_replacement(&replacement),
                case,
            });
            at += end;
        }
        if rules.is_empty() {
            return Err(RuleError(
                "no rule (DEFAULT maps a DN to itself)".to_string(),
            ));
        }
        Ok(PrincipalMapper { rules })
    }

    /// The principal name of `dn`: the first rule that matches.
    pub fn map(&self, dn: &str) -> Result<String, PrincipalError> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Ok(dn.to_string()),
                Rule::Replace {
                    whole,
                    pattern,
                    replacement,
                    case,
                } => {
                    if !whole.is_match(dn) {
                        continue;
                    }
                    let name = pattern.replace_all(dn, replacement.as_str()).into_owned();
                    return Ok(match case {
                        Case::Keep => name,
                        Case::Lower => name.to_lowercase(),
                        Case::Upper => name.to_uppercase(),
                    });
                }
            }
        }
        Err(PrincipalError::NoRuleMatches(dn.to_string()))
    }
}

fn first_item(text: &str) -> &str {
    text.split(',').next().unwrap_or(text).trim()
}

/// After a rule: spaces, then a comma or the end.
fn expect_separator(after: &str) -> Result<(), RuleError> {
    let trimmed = after.trim_start();
    if trimmed.is_empty() || trimmed.starts_with(',') {
        Ok(())
    } else {
        Err(RuleError(format!(
            "unexpected '{}' after a rule",
            first_item(trimmed)
        )))
    }
}

/// Reads up to the first unescaped `/`: the text (escapes kept, as Kafka hands them to the
/// regex) and how many bytes it used, the slash included.
fn until_slash(text: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                if let Some((_, next)) = chars.next() {
                    out.push(next);
                }
            }
            '/' => return Some((out, i + 1)),
            _ => out.push(c),
        }
    }
    None
}

/// Java's replacement syntax (`$1`, `\$` for a dollar) in the `regex` crate's (`${1}`, `$$`).
fn java_replacement(java: &str) -> String {
    let mut out = String::new();
    let mut chars = java.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(other) => out.push(other),
                None => {}
            },
            '$' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    out.push_str("$$");
                } else {
                    out.push_str(&format!("${{{digits}}}"));
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// One DER element: its tag, its content and the whole encoding (tag and length included).
struct Element<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Reads the DER element at the start of `input`; returns it and what follows.
fn element(input: &[u8]) -> Result<(Element<'_>, &[u8]), PrincipalError> {
    let malformed = PrincipalError::Malformed;
    let (&tag, rest) = input.split_first().ok_or(malformed("truncated"))?;
    if tag & 0x1f == 0x1f {
        return Err(malformed("high tag numbers are not used in a subject"));
    }
    let (&first, mut rest) = rest.split_first().ok_or(malformed("truncated length"))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(malformed("bad length"));
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[count..];
        len
    };
    if rest.len() < len {
        return Err(malformed("element longer than its input"));
    }
    let header = input.len() - rest.len();
    Ok((
        Element {
            tag,
            content: &rest[..len],
            whole: &input[..header + len],
        },
        &rest[len..],
    ))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;

/// The subject DN of a DER certificate, in RFC 2253 form.
pub fn subject_dn(certificate: &[u8]) -> Result<String, PrincipalError> {
    let malformed = PrincipalError::Malformed;
    let (cert, _) = element(certificate)?;
    if cert.tag != SEQUENCE {
        return Err(malformed("not a certificate"));
    }
    let (tbs, _) = element(cert.content)?;
    if tbs.tag != SEQUENCE {
        return Err(malformed("no TBSCertificate"));
    }
    let mut fields = tbs.content;
    let (first, rest) = element(fields)?;
    // [0] EXPLICIT version, present in v2 and v3 certificates.
    if first.tag == 0xa0 {
        fields = rest;
    }
    // serialNumber, signature, issuer, validity, then the subject.
    for _ in 0..4 {
        fields = element(fields)?.1;
    }
    let (subject, _) = element(fields)?;
    if subject.tag != SEQUENCE {
        return Err(malformed("subject is not a Name"));
    }
    name_rfc2253(subject.content)
}

/// Formats the content of an X.501 `Name` (a sequence of RDNs).
pub fn name_rfc2253(mut rdns: &[u8]) -> Result<String, PrincipalError> {
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (rdn, rest) = element(rdns)?;
        if rdn.tag != SET {
            return Err(PrincipalError::Malformed("an RDN is not a SET"));
        }
        let mut avas = Vec::new();
        let mut inner = rdn.content;
        while !inner.is_empty() {
            let (ava, next) = element(inner)?;
            if ava.tag != SEQUENCE {
                return Err(PrincipalError::Malformed("an AVA is not a SEQUENCE"));
            }
            avas.push(ava_rfc2253(ava.content)?);
            inner = next;
        }
        parts.push(avas.join("+"));
        rdns = rest;
    }
    parts.reverse();
    Ok(parts.join(","))
}

fn ava_rfc2253(content: &[u8]) -> Result<String, PrincipalError> {
    let (oid, rest) = element(content)?;
    if oid.tag != 0x06 {
        return Err(PrincipalError::Malformed("an AVA has no OID"));
    }
    let (value, _) = element(rest)?;
    let dotted = oid_text(oid.content)?;
    let keyword = match dotted.as_str() {
        "2.5.4.3" => Some("CN"),
        "2.5.4.6" => Some("C"),
        "2.5.4.7" => Some("L"),
        "2.5.4.8" => Some("ST"),
        "2.5.4.9" => Some("STREET"),
        "2.5.4.10" => Some("O"),
        "2.5.4.11" => Some("OU"),
        "0.9.2342.19200300.100.1.25" => Some("DC"),
        "0.9.2342.19200300.100.1.1" => Some("UID"),
        _ => None,
    };
    let text = keyword.and_then(|_| string_value(value.tag, value.content));
    Ok(match (keyword, text) {
        (Some(keyword), Some(text)) => format!("{keyword}={}", escape(&text)),
        (keyword, _) => format!(
            "{}=#{}",
            keyword.map_or(dotted, str::to_string),
            hex(value.whole)
        ),
    })
}

/// The text of a directory string, for the string types Java renders as text.
fn string_value(tag: u8, content: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, GeneralString.
        0x0c | 0x13 | 0x16 | 0x1b => Some(String::from_utf8_lossy(content).into_owned()),
        // TeletexString (T61): read as Latin-1.
        0x14 => Some(content.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16 big-endian.
        0x1e => {
            let units: Vec<u16> = content
                .chunks(2)
                .map(|pair| u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]))
                .collect();
            Some(String::from_utf16_lossy(&units))
        }
        _ => None,
    }
}

fn escape(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let lead = chars
        .iter()
        .take_while(|c| **c == ' ' || **c == '\r')
        .count();
    let trail = chars
        .iter()
        .rev()
        .take_while(|c| **c == ' ' || **c == '\r')
        .count();
    let mut out = String::with_capacity(value.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c == '\0' {
            out.push_str("\\00");
            continue;
        }
        if ",=+<>#;\"\\".contains(c) || i < lead || i >= chars.len() - trail {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn oid_text(content: &[u8]) -> Result<String, PrincipalError> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for (i, &byte) in content.iter().enumerate() {
        if value > (u64::MAX >> 7) {
            return Err(PrincipalError::Malformed("OID arc too large"));
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                let (first, second) = match value {
                    0..40 => (0, value),
                    40..80 => (1, value - 40),
                    _ => (2, value - 80),
                };
                arcs.push(first);
                arcs.push(second);
            } else {
                arcs.push(value);
            }
            value = 0;
        } else if i + 1 == content.len() {
            return Err(PrincipalError::Malformed("OID ends inside an arc"));
        }
    }
    if arcs.is_empty() {
        return Err(PrincipalError::Malformed("empty OID"));
    }
    Ok(arcs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 0x80 {
            out.push(content.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(content.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(content);
        out
    }

    /// An AVA with an OID given as its DER content bytes.
    fn ava(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let mut content = der(0x06, oid);
        content.extend(der(tag, value));
        der(SEQUENCE, &content)
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const OU: &[u8] = &[0x55, 0x04, 0x0b];
    const O: &[u8] = &[0x55, 0x04, 0x0a];
    const C: &[u8] = &[0x55, 0x04, 0x06];
    const EMAIL: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];

    fn name(rdns: &[Vec<Vec<u8>>]) -> Vec<u8> {
        rdns.iter()
            .flat_map(|avas| der(SET, &avas.concat()))
            .collect()
    }

    #[test]
    fn rdns_are_written_last_first_with_keywords() {
        // Encoded C=US, O=acme, OU=eng, CN=alice (root first, as certificates are).
        let subject = name(&[
            vec![ava(C, 0x13, b"US")],
            vec![ava(O, 0x0c, b"acme")],
            vec![ava(OU, 0x0c, b"eng")],
            vec![ava(CN, 0x0c, b"alice")],
        ]);
        assert_eq!(
            name_rfc2253(&subject).unwrap(),
            "CN=alice,OU=eng,O=acme,C=US"
        );
    }

    #[test]
    fn special_characters_and_unknown_attributes() {
        let subject = name(&[
            vec![ava(CN, 0x0c, b"a,b+c=\"d\"\\ #")],
            vec![ava(EMAIL, 0x16, b"a@b.c")],
        ]);
        assert_eq!(
            name_rfc2253(&subject).unwrap(),
            "1.2.840.113549.1.9.1=#16056140622e63,CN=a\\,b\\+c\\=\\\"d\\\"\\\\ \\#"
        );
        let spaced = name(&[vec![ava(CN, 0x0c, b" x ")]]);
        assert_eq!(name_rfc2253(&spaced).unwrap(), "CN=\\ x\\ ");
        let multi = name(&[vec![ava(CN, 0x0c, b"a"), ava(OU, 0x13, b"b")]]);
        assert_eq!(name_rfc2253(&multi).unwrap(), "CN=a+OU=b");
        let bmp = name(&[vec![ava(CN, 0x1e, &[0x00, 0x62, 0x00, 0xe9])]]);
        assert_eq!(name_rfc2253(&bmp).unwrap(), "CN=bé");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x05, 0x30],
            &[0x31, 0x02, 0x30, 0x00],
            &[0x31, 0x04, 0x30, 0x02, 0x06, 0x00],
        ] {
            assert!(name_rfc2253(bad).is_err() || bad.is_empty(), "{bad:?}");
            assert!(subject_dn(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_rule_is_the_dn() {
        let mapper = PrincipalMapper::parse("DEFAULT").unwrap();
        assert_eq!(mapper.map("CN=alice,O=acme").unwrap(), "CN=alice,O=acme");
    }

    #[test]
    fn kafka_rule_examples() {
        // The examples of Kafka's documentation of ssl.principal.mapping.rules.
        let mapper = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,\
             RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,\
             RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L,\
             DEFAULT",
        )
        .unwrap();
        assert_eq!(
            mapper
                .map("CN=serviceuser,OU=ServiceUsers,O=Unknown,L=Unknown,ST=Unknown,C=Unknown")
                .unwrap(),
            "serviceuser"
        );
        assert_eq!(
            mapper
                .map("CN=adminUser,OU=Admin,O=Unknown,L=Unknown,ST=Unknown,C=Unknown")
                .unwrap(),
            "adminuser@admin"
        );
        assert_eq!(mapper.map("OU=x,cn=Bob.Smith,O=y").unwrap(), "bob.smith");
        assert_eq!(mapper.map("O=nobody").unwrap(), "O=nobody");
        let upper = PrincipalMapper::parse("RULE:^CN=([a-z]+)$/$1x/U").unwrap();
        assert_eq!(upper.map("CN=carol").unwrap(), "CAROLX");
        assert_eq!(
            upper.map("CN=Carol1"),
            Err(PrincipalError::NoRuleMatches("CN=Carol1".to_string()))
        );
        let escaped = PrincipalMapper::parse(r"RULE:^CN=(.*)\/(.*)$/$2 \$ $1/").unwrap();
        assert_eq!(escaped.map("CN=a/b").unwrap(), "b $ a");
    }

    #[test]
    fn bad_rules_are_refused() {
        for (text, part) in [
            ("", "no rule"),
            ("RULE:^CN=(.*)$/$1", "last '/'"),
            ("RULE:^CN=(.*)$", "lacks its '/'"),
            ("NOPE", "neither DEFAULT nor RULE"),
            ("RULE:(/$1/", "pattern"),
            ("DEFAULT junk", "unexpected"),
        ] {
            let err = PrincipalMapper::parse(text).unwrap_err().to_string();
            assert!(err.contains(part), "{text}: {err}");
        }
    }
}
