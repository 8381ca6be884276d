//! Bad input from the MTA or the client never panics the engine and never
//! produces an unsafe reply: malformed addresses, odd HELO names, control
//! characters, huge values. Inputs come from a seeded generator, so a
//! failure is reproducible.

use async_trait::async_trait;
use nobounce_core::{
    address::{declared_size, EnvelopeAddress},
    reply::MAX_TEXT_LEN as MAX_REPLY_TEXT_LEN,
    sanitize_text, Engine, EngineConfig, Reply, Verdict,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};

/// xorshift64*: small, deterministic, good enough to shake out panics.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A string of pieces that matter to SMTP and SPF parsing.
    fn nasty(&mut self) -> String {
        const PIECES: &[&str] = &[
            "<",
            ">",
            "@",
            ":",
            ",",
            ".",
            "..",
            "%",
            "%%",
            "%{",
            "}",
            "\r",
            "\n",
            "\r\n",
            "\0",
            "\t",
            " ",
            "\"",
            "\\",
            "[",
            "]",
            "postmaster",
            "example.org",
            "a",
            "Ü",
            "€",
            "🙂",
            "\u{7f}",
            "xn--",
            "-",
            "_",
            "=",
            "SIZE=",
            "99999999999999999999999",
            "0",
            "/",
            "::1",
            "192.0.2.1",
            "v=spf1",
            "-all",
        ];
        let len = self.below(40);
        let mut s = String::new();
        for _ in 0..len {
            s.push_str(PIECES[self.below(PIECES.len())]);
        }
        if self.below(20) == 0 {
            s.push_str(&"x".repeat(self.below(5000)));
        }
        s
    }
}

#[derive(Debug)]
struct Timeouts;

#[async_trait]
impl Lookup for Timeouts {
    async fn lookup_a<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<Ipv4Addr>> {
        Err(LookupError::Timeout)
    }
    async fn lookup_aaaa<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<Ipv6Addr>> {
        Err(LookupError::Timeout)
    }
    async fn lookup_mx<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<Name>> {
        Err(LookupError::Timeout)
    }
    async fn lookup_txt<'l, 'a>(&'l self, name: &'a Name) -> LookupResult<Vec<String>> {
        // Some names have a record (with odd text), the rest time out.
        if name.as_str().len().is_multiple_of(3) {
            Ok(vec![format!("v=spf1 -all exp={}", name.as_str())])
        } else {
            Err(LookupError::Timeout)
        }
    }
    async fn lookup_ptr<'l>(&'l self, _: IpAddr) -> LookupResult<Vec<Name>> {
        Err(LookupError::Timeout)
    }
}

fn assert_safe(reply: &Reply) {
    let t = reply.text();
    assert!(t.len() <= MAX_REPLY_TEXT_LEN, "{} bytes", t.len());
    assert!(
        !t.bytes().any(|b| b.is_ascii_control() || !b.is_ascii()),
        "{t:?}"
    );
    // With every '%' doubled for a milter, it still fits a milter line.
    assert!(t.replace('%', "%%").len() <= 980, "{t:?}");
}

#[test]
fn parsers_and_sanitiser_take_anything() {
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..5000 {
        let s = rng.nasty();
        let a = EnvelopeAddress::parse(&s);
        let _ = a.to_string();
        let _ = declared_size(s.split(' '));
        let t = sanitize_text(&s);
        assert!(t.len() <= MAX_REPLY_TEXT_LEN);
        assert!(!t.contains(['\r', '\n', '\0']));
        for code in [421u16, 451, 550, 0, 999] {
            if let Ok(r) = Reply::new(code, "5.7.1", &s) {
                assert_safe(&r);
            }
        }
    }
}

#[tokio::test]
async fn whole_sessions_with_garbage_never_panic_and_reply_safely() {
    let mut config = EngineConfig::default();
    config.spf.trusted_networks.clear();
    config.spf.timeout = std::time::Duration::from_secs(1);
    let engine = Engine::builder(config).lookup(Timeouts).build();
    let mut rng = Rng(0x5eed_0002);
    for i in 0..300 {
        let mut s = engine.session();
        let ip: Option<IpAddr> = match i % 4 {
            0 => None,
            1 => Some(IpAddr::from([192, 0, 2, (i % 250) as u8])),
            2 => Some("2001:db8::1".parse().expect("literal")),
            _ => Some("::ffff:198.51.100.1".parse().expect("literal")),
        };
        let mut verdicts: Vec<Verdict> = Vec::new();
        verdicts.push(s.connect(ip, &rng.nasty(), Some(&rng.nasty())).await);
        verdicts.push(s.helo(&rng.nasty()).await);
        s.set_queue_id(&rng.nasty());
        let args: Vec<String> = (0..rng.below(4)).map(|_| rng.nasty()).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let auth = (rng.below(5) == 0).then(|| rng.nasty());
        verdicts.push(s.mail_from(&rng.nasty(), &args, auth.as_deref()).await);
        for _ in 0..rng.below(4) {
            verdicts.push(s.rcpt_to(&rng.nasty()).await);
            s.mta_rejected_rcpt(&rng.nasty(), Some(&rng.nasty())).await;
        }
        for _ in 0..rng.below(4) {
            let name = if rng.below(2) == 0 {
                "Authentication-Results".to_string()
            } else {
                rng.nasty()
            };
            s.header(&name, &rng.nasty());
        }
        let plan = s.end_of_message().await;
        for (name, value) in &plan.insert_headers {
            assert!(!name.contains(['\r', '\n', '\0']), "{name:?}");
            assert!(!value.contains(['\r', '\n', '\0']), "{value:?}");
        }
        s.abort();
        for v in &verdicts {
            if let Some(r) = v.reply() {
                assert_safe(r);
            }
        }
    }
}
