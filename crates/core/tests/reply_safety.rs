//! Issue 13: for any input, the reply nobounce hands the MTA passes
//! Postfix's checks of a milter reply (`milter8.c`, SMFIR_REPLYCODE: a 4xx
//! or 5xx code, a space, an enhanced status of the same class; `%%` for a
//! literal `%`, which the milter front end writes) and libmilter's
//! (`smfi_setreply`: at most 980 bytes a line, no CR, LF or NUL).

use async_trait::async_trait;
use nobounce_core::{
    DirectoryError, Engine, EngineConfig, RecipientDirectory, RecipientQuery, RecipientStatus,
    Reply, SpfConfig, Verdict,
};
use proptest::prelude::*;
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};

/// The reply as indymilter sends it: `CODE STATUS TEXT`.
fn assert_valid_milter_reply(reply: &Reply) {
    let wire = reply.to_string();
    let b = wire.as_bytes();
    assert!(b.len() >= 5, "{wire:?}");
    assert!(matches!(b[0], b'4' | b'5'), "{wire:?}");
    assert!(b[1].is_ascii_digit() && b[2].is_ascii_digit(), "{wire:?}");
    assert_eq!(b[3], b' ', "{wire:?}");
    assert_eq!(b[4], b[0], "status class = code class: {wire:?}");
    // Even with every '%' doubled by the milter front end.
    let milter_text = reply.text().replace('%', "%%");
    assert!(milter_text.len() <= 980, "{} bytes", milter_text.len());
    assert!(!wire.contains(['\r', '\n', '\0']), "{wire:?}");
    assert!(wire.is_ascii(), "{wire:?}");
    // The enhanced status parses, of the code's class.
    let status = wire.split(' ').nth(1).expect("status");
    let parsed: nobounce_core::EnhancedStatus = status.parse().expect("status parses");
    assert_eq!(u16::from(parsed.class()), reply.code().get() / 100);
}

fn check(verdict: &Verdict) {
    if let Some(reply) = verdict.reply() {
        assert_valid_milter_reply(reply);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_reply_that_builds_is_valid(
        code in 0u16..1000,
        class in 0u8..10,
        subject in 0u16..1200,
        detail in 0u16..1200,
        text in any::<String>(),
    ) {
        if let Ok(reply) = Reply::new(code, &format!("{class}.{subject}.{detail}"), &text) {
            assert_valid_milter_reply(&reply);
        } else {
            // Refused exactly when the pieces are invalid or disagree.
            prop_assert!(
                !(400..600).contains(&code)
                    || !matches!(class, 4 | 5)
                    || subject > 999
                    || detail > 999
                    || u16::from(class) != code / 100
            );
        }
    }

    #[test]
    fn long_texts_with_percent_signs_stay_within_the_limit(
        text in "[%a-z\\r\\n\\x00 ]{0,3000}",
    ) {
        let reply = Reply::new(550, "5.7.1", &text).expect("valid code");
        assert_valid_milter_reply(&reply);
    }
}

#[derive(Debug)]
struct AnyDns(String);

#[async_trait]
impl Lookup for AnyDns {
    async fn lookup_a<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<Ipv4Addr>> {
        Ok(vec![Ipv4Addr::new(192, 0, 2, 1)])
    }
    async fn lookup_aaaa<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<Ipv6Addr>> {
        Err(LookupError::NoRecords)
    }
    async fn lookup_mx<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<Name>> {
        Err(LookupError::NoRecords)
    }
    async fn lookup_txt<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<String>> {
        Ok(vec![self.0.clone()])
    }
    async fn lookup_ptr<'l>(&'l self, _: IpAddr) -> LookupResult<Vec<Name>> {
        Err(LookupError::Timeout)
    }
}

#[derive(Debug)]
struct AnyDirectory(u8);

#[async_trait]
impl RecipientDirectory for AnyDirectory {
    async fn lookup(&self, q: &RecipientQuery<'_>) -> Result<RecipientStatus, DirectoryError> {
        Ok(match (self.0 as usize + q.address.len()) % 5 {
            0 => RecipientStatus::Deliverable,
            1 => RecipientStatus::Unknown,
            2 => RecipientStatus::OverQuota { room_left: Some(1) },
            3 => RecipientStatus::Disabled,
            _ => return Err(DirectoryError::new(q.address.to_owned())),
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the MTA passes on and whatever the DNS says (SPF records
    /// with `exp=` texts included), every reply of a conversation is valid.
    #[test]
    fn every_reply_of_a_conversation_is_valid(
        spf in prop_oneof![
            Just("v=spf1 -all exp=x.test".to_string()),
            "v=spf1 -all exp=[ -~]{0,40}",
            any::<String>(),
        ],
        client in any::<String>(),
        helo in any::<String>(),
        sender in any::<String>(),
        rcpts in proptest::collection::vec(any::<String>(), 0..6),
        seed in any::<u8>(),
        text in any::<String>(),
    ) {
        let config = EngineConfig {
            spf: SpfConfig { trusted_networks: Vec::new(), ..Default::default() },
            recipients: nobounce_core::recipient::RecipientPolicy {
                unknown_text: text.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        let engine = Engine::builder(config)
            .lookup(AnyDns(spf))
            .directory(Arc::new(AnyDirectory(seed)))
            .build();
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let mut s = engine.session();
            check(&s.connect(Some("192.0.2.9".parse().unwrap()), &client, Some(&client)).await);
            check(&s.helo(&helo).await);
            check(&s.mail_from(&sender, &[], None).await);
            for r in &rcpts {
                check(&s.rcpt_to(r).await);
            }
            if let Some(v) = s.end_of_message().await.refuse {
                check(&v);
            }
        });
    }
}
