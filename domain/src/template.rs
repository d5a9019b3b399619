//! Per-account overrides of the invitation and reminder emails: a subject
//! and a plain-text body (optionally an HTML body) with `{{placeholders}}`.
//! Parsed once at the edge: a stored template has a one-line subject, only
//! known placeholders, and always carries the accept link.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// Which email a template replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    /// The invitation (and its resends).
    Invitation,
    /// The one reminder before the deadline.
    Reminder,
}

/// The placeholders a template may use, and what the mailer puts there.
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    ("account_name", "the account's name"),
    ("customer_number", "the account's customer number"),
    ("inviter", "who invited"),
    ("invitee_name", "the invitee's name (empty when unknown)"),
    ("roles", "the roles accepting grants, comma-separated"),
    ("expires_at", "the link's deadline, e.g. 2026-11-26 09:00 UTC"),
    ("accept_url", "the accept link (required in the text body)"),
];

/// An account's own subject and bodies for one kind of email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailTemplate {
    subject: String,
    text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    html: Option<String>,
}

/// Longest subject, in characters.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// Longest body, in bytes.
pub const MAX_BODY_BYTES: usize = 20_000;

impl MailTemplate {
    /// Checks a template (`invalid_template`, naming the field).
    pub fn parse(subject: &str, text: &str, html: Option<&str>) -> Result<MailTemplate, DomainError> {
        let subject = subject.trim();
        if subject.is_empty() || subject.chars().count() > MAX_SUBJECT_CHARS || subject.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                "subject",
                "invalid_template",
                format!("a subject is one line of 1 to {MAX_SUBJECT_CHARS} characters"),
            ));
        }
        for (field, body) in [("subject", Some(subject)), ("text", Some(text)), ("html", html)] {
            let Some(body) = body else { continue };
            if body.len() > MAX_BODY_BYTES {
                return Err(DomainError::invalid(field, "invalid_template", format!("at most {MAX_BODY_BYTES} bytes")));
            }
            for name in placeholders_in(body) {
                if !PLACEHOLDERS.iter().any(|(known, _)| *known == name) {
                    return Err(DomainError::invalid(
                        field,
                        "invalid_template",
                        format!("unknown placeholder {{{{{name}}}}}"),
                    ));
                }
            }
        }
        if !text.contains("{{accept_url}}") || html.is_some_and(|h| !h.contains("{{accept_url}}")) {
            return Err(DomainError::invalid("text", "invalid_template", "the body must contain {{accept_url}}"));
        }
        Ok(MailTemplate { subject: subject.to_string(), text: text.to_string(), html: html.map(str::to_string) })
    }

    /// The subject with `values` filled in (line breaks in values dropped,
    /// so nothing can reach another header).
    pub fn subject(&self, values: &BTreeMap<&str, String>) -> String {
        fill(&self.subject, values, |v| v.replace(['\r', '\n', '\0'], " "))
    }

    /// The text body with `values` filled in.
    pub fn text(&self, values: &BTreeMap<&str, String>) -> String {
        fill(&self.text, values, |v| v.to_string())
    }

    /// The HTML body with `values` filled in, escaped; None when the
    /// template has only a text body.
    pub fn html(&self, values: &BTreeMap<&str, String>, escape: impl Fn(&str) -> String) -> Option<String> {
        self.html.as_ref().map(|h| fill(h, values, escape))
    }
}

fn placeholders_in(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                out.push(after[..end].trim());
                rest = &after[end + 2..];
            }
            None => break,
        }
    }
    out
}

fn fill(template: &str, values: &BTreeMap<&str, String>, render: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        if let Some(v) = values.get(after[..end].trim()) {
            out.push_str(&render(v));
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BTreeMap<&'static str, String> {
        [("account_name", "Acme <b>\r\nBcc: x".to_string()), ("accept_url", "https://a.test/invite/t".into())].into()
    }

    #[test]
    fn given_a_template_when_filled_then_values_replace_placeholders() {
        let t = MailTemplate::parse(
            "Join {{ account_name }}",
            "Go: {{accept_url}}",
            Some("<a href=\"{{accept_url}}\">{{account_name}}</a>"),
        )
        .unwrap();
        assert_eq!(t.subject(&values()), "Join Acme <b>  Bcc: x", "no line break reaches the header");
        assert_eq!(t.text(&values()), "Go: https://a.test/invite/t");
        let html = t.html(&values(), |v| v.replace('<', "&lt;")).unwrap();
        assert!(html.contains("Acme &lt;b>"), "{html}");
    }

    #[test]
    fn given_a_bad_template_then_invalid_template_naming_the_field() {
        for (subject, text, html, field) in [
            ("", "{{accept_url}}", None, "subject"),
            ("two\nlines", "{{accept_url}}", None, "subject"),
            ("Hi", "no link", None, "text"),
            ("Hi", "{{accept_url}} {{password}}", None, "text"),
            ("Hi {{secret}}", "{{accept_url}}", None, "subject"),
            ("Hi", "{{accept_url}}", Some("<p>no link</p>"), "text"),
        ] {
            let e = MailTemplate::parse(subject, text, html).unwrap_err();
            assert_eq!((e.code(), e.field()), ("invalid_template", Some(field)), "{subject:?} {text:?} {html:?}");
        }
    }
}
