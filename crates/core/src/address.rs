//! Envelope addresses and ESMTP parameters as the MTA passes them on.

/// An envelope address from MAIL FROM or RCPT TO, with brackets and any
/// source route removed.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub enum EnvelopeAddress {
    /// The null reverse-path `<>`.
    Null,
    /// `local@domain` (the domain may be empty if the MTA allowed it).
    Mailbox { local: String, domain: String },
    /// Something that is not `local@domain`, kept as given (`postmaster`
    /// without domain, garbage the MTA let through).
    Other(String),
}

impl EnvelopeAddress {
    /// Parses `<local@domain>`, `local@domain`, `<>`, `<@route:local@domain>`.
    ///
    /// ```
    /// use nobounce_core::address::EnvelopeAddress;
    ///
    /// assert_eq!(EnvelopeAddress::parse("<>"), EnvelopeAddress::Null);
    /// assert_eq!(
    ///     EnvelopeAddress::parse("<@a.example:Joe@B.Example>").to_string(),
    ///     "Joe@B.Example"
    /// );
    /// ```
    pub fn parse(raw: &str) -> Self {
        // Angle brackets, whitespace inside them (fuzzing: `<a@b\n>` printed
        // and parsed again lost its `\n`) and RFC 5321 §4.1.2 source routes
        // ("@a,@b:local@domain") are not part of the address. They are
        // stripped until none is left, in any nesting: what follows a route
        // may be bracketed or routed again (fuzzing found `<@a:@b:l@d>` and
        // `<<l@d >>`, which otherwise printed as another address).
        let mut s = raw.trim();
        loop {
            if let Some(inner) = s.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
                s = inner.trim();
            } else if let Some((_, rest)) = s.strip_prefix('@').and_then(|s| s.split_once(':')) {
                s = rest.trim();
            } else {
                break;
            }
        }
        if s.is_empty() {
            return Self::Null;
        }
        // The local part may be quoted and contain '@'; the domain never does.
        match s.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() => Self::Mailbox {
                local: local.to_owned(),
                domain: domain.to_owned(),
            },
            _ => Self::Other(s.to_owned()),
        }
    }

    /// `true` for `<>`.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The domain, if any.
    pub fn domain(&self) -> Option<&str> {
        match self {
            Self::Mailbox { domain, .. } => Some(domain),
            _ => None,
        }
    }
}

impl std::fmt::Display for EnvelopeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Null => Ok(()),
            Self::Mailbox { local, domain } => write!(f, "{local}@{domain}"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// The value of the `SIZE=` ESMTP parameter among `args`, if any.
///
/// A value too large for `u64` counts as `u64::MAX` (larger than any room);
/// a malformed value is ignored.
pub fn declared_size<'a>(args: impl IntoIterator<Item = &'a str>) -> Option<u64> {
    args.into_iter().find_map(|a| {
        let (k, v) = a.split_once('=')?;
        if !k.eq_ignore_ascii_case("SIZE") || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(v.parse().unwrap_or(u64::MAX))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_whitespace_inside_brackets_is_not_kept() {
        let parsed = EnvelopeAddress::parse("<joe@example.org\n>");
        assert_eq!(parsed.domain(), Some("example.org"));
        assert_eq!(EnvelopeAddress::parse(&parsed.to_string()), parsed);
        assert_eq!(EnvelopeAddress::parse("< >"), EnvelopeAddress::Null);
    }

    #[test]
    fn fuzz_nested_brackets_are_all_stripped() {
        // The envelope target's crash-440df0f2: the inner pair was kept as
        // part of the local part and domain, and printed without the outer.
        let text = "<<\u{fffd}@\0\0\0\0\0\u{1} >>";
        let parsed = EnvelopeAddress::parse(text);
        assert_eq!(parsed.domain(), Some("\0\0\0\0\0\u{1}"));
        assert_eq!(EnvelopeAddress::parse(&parsed.to_string()), parsed);
        assert_eq!(
            EnvelopeAddress::parse("<@r.example:<joe@example.org>>").to_string(),
            "joe@example.org"
        );
        assert_eq!(EnvelopeAddress::parse("<<>>"), EnvelopeAddress::Null);
    }

    #[test]
    fn fuzz_nested_source_routes_are_all_stripped() {
        let text = " @\u{fffd}!: @\u{fffd}!: @@\u{fffd}!";
        let parsed = EnvelopeAddress::parse(text);
        assert_eq!(EnvelopeAddress::parse(&parsed.to_string()), parsed);
        assert_eq!(
            EnvelopeAddress::parse("<@a.example:@b.example:joe@c.example>").to_string(),
            "joe@c.example"
        );
    }

    #[test]
    fn parses_envelope_forms() {
        assert_eq!(EnvelopeAddress::parse(""), EnvelopeAddress::Null);
        assert_eq!(EnvelopeAddress::parse(" <> "), EnvelopeAddress::Null);
        assert_eq!(
            EnvelopeAddress::parse("<a@b.c>"),
            EnvelopeAddress::Mailbox {
                local: "a".into(),
                domain: "b.c".into()
            }
        );
        assert_eq!(
            EnvelopeAddress::parse("<\"x@y\"@b.c>").domain(),
            Some("b.c")
        );
        assert_eq!(
            EnvelopeAddress::parse("<postmaster>"),
            EnvelopeAddress::Other("postmaster".into())
        );
        assert_eq!(
            EnvelopeAddress::parse("<@b.c>"),
            EnvelopeAddress::Other("@b.c".into())
        );
    }

    /// Found by fuzzing (fuzz/fuzz_targets/envelope.rs): whitespace after a
    /// source route stayed in the local part, so printing and parsing again
    /// gave another address.
    #[test]
    fn parsing_what_was_printed_gives_the_same_address() {
        for raw in ["@o:\n\u{1}@8x", "<@a.example: joe@b.example>", " <a@b> "] {
            let once = EnvelopeAddress::parse(raw);
            assert_eq!(EnvelopeAddress::parse(&once.to_string()), once, "{raw:?}");
        }
    }

    #[test]
    fn size_parameter() {
        assert_eq!(declared_size(["BODY=8BITMIME", "size=1234"]), Some(1234));
        assert_eq!(declared_size(["SIZE="]), None);
        assert_eq!(declared_size(["SIZE=-1"]), None);
        assert_eq!(
            declared_size(["SIZE=99999999999999999999999999"]),
            Some(u64::MAX)
        );
        assert_eq!(declared_size(Vec::<&str>::new()), None);
    }
}
