//! Kafka's JAAS configuration text, as `listener.name.<listener>.<mechanism>.sasl.jaas.config`
//! holds it: `<LoginModuleClass> <flag> key1="value1" key2=value2;`.
//!
//! Owner: `Config::build`, at start. Pure: text in, a `JaasEntry` or one error line out. The
//! error never quotes a value (values are passwords).
//!
//! Values may be quoted (`"..."`, with `\"` and `\\` escapes) or bare words; one login module
//! per setting, as Kafka requires of `sasl.jaas.config`.

use std::collections::BTreeMap;

/// One login module with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaasEntry {
    /// The login module's class name.
    pub login_module: String,
    /// `required`, `requisite`, `sufficient` or `optional`.
    pub flag: String,
    /// The options, in key order.
    pub options: BTreeMap<String, String>,
}

/// Why a JAAS text was refused. Never carries an option's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JaasError(pub String);

fn err(reason: impl Into<String>) -> JaasError {
    JaasError(reason.into())
}

/// A token of the JAAS grammar.
#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Equals,
    Semicolon,
}

fn tokenize(text: &str) -> Result<Vec<Token>, JaasError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '=' => {
                chars.next();
                tokens.push(Token::Equals);
            }
            ';' => {
                chars.next();
                tokens.push(Token::Semicolon);
            }
            '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => return Err(err("a quoted value is not closed")),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(escaped) => value.push(escaped),
                            None => return Err(err("a quoted value is not closed")),
                        },
                        Some(other) => value.push(other),
                    }
                }
                tokens.push(Token::Quoted(value));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '=' || c == ';' || c == '"' {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

/// Parses one `sasl.jaas.config` value.
pub fn parse(text: &str) -> Result<JaasEntry, JaasError> {
    let tokens = tokenize(text)?;
    let mut it = tokens.into_iter();
    let Some(Token::Word(login_module)) = it.next() else {
        return Err(err("expected a login module class name first"));
    };
    let flag = match it.next() {
        Some(Token::Word(flag))
            if matches!(
                flag.as_str(),
                "required" | "requisite" | "sufficient" | "optional"
            ) =>
        {
            flag
        }
        _ => {
            return Err(err(
                "expected a control flag (required, requisite, sufficient, optional) after the login module",
            ));
        }
    };
    let mut options = BTreeMap::new();
    loop {
        match it.next() {
            Some(Token::Semicolon) => break,
            Some(Token::Word(key)) => {
                if it.next() != Some(Token::Equals) {
                    return Err(err(format!("option '{key}' has no '='")));
                }
                let value = match it.next() {
                    Some(Token::Word(v)) | Some(Token::Quoted(v)) => v,
                    _ => return Err(err(format!("option '{key}' has no value"))),
                };
                if options.insert(key.clone(), value).is_some() {
                    return Err(err(format!("option '{key}' appears twice")));
                }
            }
            Some(_) => return Err(err("expected an option name")),
            None => return Err(err("the login module entry does not end with ';'")),
        }
    }
    if it.next().is_some() {
        return Err(err(
            "one login module per setting (text after the first ';')",
        ));
    }
    Ok(JaasEntry {
        login_module,
        flag,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_plain_sample_parses() {
        let entry = parse(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required
               username="admin" password="admin-secret"
               user_admin="admin-secret" user_alice="al\"ice;=" user_bob=bare;"#,
        )
        .unwrap();
        assert_eq!(
            entry.login_module,
            "org.apache.kafka.common.security.plain.PlainLoginModule"
        );
        assert_eq!(entry.flag, "required");
        assert_eq!(entry.options["user_alice"], "al\"ice;=");
        assert_eq!(entry.options["user_bob"], "bare");
        assert_eq!(entry.options["username"], "admin");
        assert_eq!(entry.options.len(), 5);
    }

    #[test]
    fn malformed_texts_are_refused_without_quoting_values() {
        for (text, reason) in [
            ("", "login module class"),
            ("Module", "control flag"),
            ("Module maybe;", "control flag"),
            (r#"Module required user_a="secret1""#, "does not end"),
            (r#"Module required user_a "secret2";"#, "has no '='"),
            (r#"Module required user_a=;"#, "has no value"),
            (r#"Module required user_a="secret3;"#, "not closed"),
            (r#"Module required a=1 a=2;"#, "twice"),
            (r#"Module required; Other required;"#, "one login module"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(reason), "{text}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }
}
