//! Splitting and normalising recipient addresses.
//!
//! Every backend starts here, so that what one backend calls "the domain"
//! is what the others call it too, and so that no address carrying control
//! characters (CR, LF, NUL: protocol injection) ever reaches a socket or a
//! file path.

use std::borrow::Cow;

/// A recipient address split at its last `@`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) struct Address<'a> {
    /// The local part, as given (case preserved).
    pub(crate) local: &'a str,
    /// The domain, lowercased, without a trailing dot.
    pub(crate) domain: String,
}

/// Splits `address` into local part and domain.
///
/// Returns `None` for anything a directory cannot judge: no `@`, an empty
/// local part or domain, an address literal (`user@[192.0.2.1]`), or any
/// control character or whitespace outside a quoted local part. Angle
/// brackets around the whole address are tolerated.
pub(crate) fn split(address: &str) -> Option<Address<'_>> {
    let address = address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address);
    if address.chars().any(char::is_control) {
        return None;
    }
    let (local, domain) = address.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty()
        || domain.starts_with('.')
        || domain.contains("..")
        || domain
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '[' | ']' | '@' | '/' | '\\' | '"'))
    {
        return None;
    }
    // Whitespace in the local part is only legal inside quotes.
    if local.chars().any(char::is_whitespace) && !local.starts_with('"') {
        return None;
    }
    Some(Address {
        local,
        domain: normalize_domain(domain),
    })
}

/// Lowercases a domain and strips one trailing dot.
pub(crate) fn normalize_domain(domain: &str) -> String {
    domain.strip_suffix('.').unwrap_or(domain).to_lowercase()
}

/// The local part as used for lookups: lowercased unless case matters.
pub(crate) fn normalize_local(local: &str, case_sensitive: bool) -> Cow<'_, str> {
    if case_sensitive || !local.chars().any(char::is_uppercase) {
        Cow::Borrowed(local)
    } else {
        Cow::Owned(local.to_lowercase())
    }
}

/// The local part without its address extension (`user+tag` → `user`), as
/// Postfix's `recipient_delimiter` does: cut at the first of the delimiter
/// characters. `None` when there is no extension, or nothing before it.
pub(crate) fn strip_extension<'a>(local: &'a str, delimiters: &str) -> Option<&'a str> {
    if delimiters.is_empty() {
        return None;
    }
    let cut = local.find(|c| delimiters.contains(c))?;
    (cut > 0).then(|| &local[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_last_at_and_lowercases_domain() {
        let a = split("Alice@Example.ORG.").expect("valid");
        assert_eq!(a.local, "Alice");
        assert_eq!(a.domain, "example.org");
        let a = split("\"odd@local\"@example.org").expect("valid");
        assert_eq!(a.local, "\"odd@local\"");
        let a = split("<bob@example.org>").expect("brackets tolerated");
        assert_eq!(a.local, "bob");
    }

    #[test]
    fn refuses_what_no_directory_can_judge() {
        for bad in [
            "postmaster",
            "@example.org",
            "user@",
            "user@.",
            "user@[192.0.2.1]",
            "user@exa..mple.org",
            "user@.example.org",
            "us\r\ner@example.org",
            "user@example.org\r\nRCPT TO:<x@y>",
            "us\0er@example.org",
            "us er@example.org",
            "user@exa mple.org",
            "user@exa/mple.org",
            "",
        ] {
            assert_eq!(split(bad), None, "{bad:?} must not be split");
        }
        assert!(split("\"us er\"@example.org").is_some());
    }

    #[test]
    fn local_part_case_and_extensions() {
        assert_eq!(normalize_local("Alice", false), "alice");
        assert_eq!(normalize_local("Alice", true), "Alice");
        assert_eq!(strip_extension("alice+news", "+"), Some("alice"));
        assert_eq!(strip_extension("alice-news+x", "+-"), Some("alice"));
        assert_eq!(strip_extension("alice", "+"), None);
        assert_eq!(strip_extension("+alice", "+"), None);
        assert_eq!(strip_extension("alice+x", ""), None);
    }
}
