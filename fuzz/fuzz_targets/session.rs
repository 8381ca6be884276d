//! A whole SMTP conversation through the engine with what the MTA passes
//! on (client name and address, HELO, MAIL and RCPT arguments, the macros
//! `{auth_authen}` and `{rcpt_host}`, headers), and a DNS that answers every
//! TXT query with fuzzed text: no input may panic, and every reply is safe.
#![no_main]

use async_trait::async_trait;
use libfuzzer_sys::fuzz_target;
use nobounce_core::{
    DirectoryError, Engine, EngineConfig, RecipientDirectory, RecipientQuery, RecipientStatus,
    Verdict,
};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, OnceLock},
};
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};

#[derive(Debug)]
struct FuzzDns(String);

#[async_trait]
impl Lookup for FuzzDns {
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

/// Answers by the address's length, so that every answer occurs.
#[derive(Debug)]
struct FuzzDirectory;

#[async_trait]
impl RecipientDirectory for FuzzDirectory {
    async fn lookup(&self, q: &RecipientQuery<'_>) -> Result<RecipientStatus, DirectoryError> {
        Ok(match q.address.len() % 6 {
            0 => RecipientStatus::Deliverable,
            1 => RecipientStatus::Unknown,
            2 => RecipientStatus::OverQuota {
                room_left: q.declared_size,
            },
            3 => RecipientStatus::Disabled,
            4 => RecipientStatus::NotHandled,
            _ => return Err(DirectoryError::new(q.address.to_owned())),
        })
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

/// The rules Postfix (`milter8_valid_smtp_reply`) and libmilter
/// (`smfi_setreply`) put on a reply nobounce hands them.
fn assert_safe(v: &Verdict) {
    if let Some(r) = v.reply() {
        let text = r.text();
        assert!(text.len() <= 980);
        assert!(!text.contains(['\r', '\n', '\0']));
        assert!(text.is_ascii());
        assert_eq!(u16::from(r.status().class()), r.code().get() / 100);
        // Every '%' is doubled.
        assert_eq!(text.matches('%').count() % 2, 0);
        assert!(!text.replace("%%", "").contains('%'));
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut f = text.split('\u{0}');
    let mut next = || f.next().unwrap_or("");
    let txt = next().to_owned();
    let ip = next().parse::<IpAddr>().ok();
    let client = next().to_owned();
    let helo = next().to_owned();
    let mail = next().to_owned();
    let args = next().to_owned();
    let auth = next().to_owned();
    let rcpts = next().to_owned();
    let rejected = next().to_owned();
    let status = next().to_owned();
    let headers = next().to_owned();
    let config = EngineConfig {
        spf: nobounce_core::SpfConfig {
            trusted_networks: Vec::new(),
            ..Default::default()
        },
        ..Default::default()
    };
    let engine = Engine::builder(config)
        .lookup(FuzzDns(txt))
        .directory(Arc::new(FuzzDirectory))
        .build();
    runtime().block_on(async {
        let mut s = engine.session();
        assert_safe(&s.connect(ip, &client, Some(&client)).await);
        assert_safe(&s.helo(&helo).await);
        let args: Vec<&str> = args.split(' ').collect();
        let auth = (!auth.is_empty()).then_some(auth.as_str());
        assert_safe(&s.mail_from(&mail, &args, auth).await);
        for rcpt in rcpts.split('\u{1}') {
            assert_safe(&s.rcpt_to(rcpt).await);
        }
        s.mta_rejected_rcpt(&rejected, Some(&status)).await;
        for header in headers.split('\u{1}') {
            let (name, value) = header.split_once(':').unwrap_or(("Authentication-Results", header));
            s.header(name, value);
        }
        let plan = s.end_of_message().await;
        if let Some(v) = &plan.refuse {
            assert_safe(v);
        }
        for (name, value) in plan.insert_headers {
            assert!(!name.contains(['\r', '\n', '\0']));
            assert!(!value.contains(['\r', '\n', '\0']), "{value:?}");
        }
    });
});
