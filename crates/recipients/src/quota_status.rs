//! Dovecot's `quota-status` service, over the Postfix policy delegation
//! protocol (<https://www.postfix.org/SMTPD_POLICY_README.html>).
//!
//! Per lookup, on a pooled connection:
//!
//! ```text
//! C: request=smtpd_access_policy
//! C: protocol_state=RCPT
//! C: protocol_name=ESMTP
//! C: recipient=alice@example.org
//! C: size=12345
//! C:
//! S: action=DUNNO
//! S:
//! ```
//!
//! `size` is always sent (`0` when the client declared none; Dovecot then
//! checks room for one byte), because Dovecot keeps the previous request's
//! size on a reused connection when the attribute is missing.
//!
//! | action | status |
//! | --- | --- |
//! | `OK`, `DUNNO` (and the non-refusing `PREPEND`, `WARN`, `INFO`) | `Deliverable` |
//! | `NNN x.y.z text`: as an `RCPT` reply (see [`crate::probe`]): `552 5.2.2`, `554 5.2.2`, `452 4.2.2` over quota, `550 5.1.1` unknown | … |
//! | `REJECT`/`DEFER` with `x.2.2`, or with "quota"/"mailbox full" in the text | `OverQuota { room_left: None }` |
//! | `REJECT` with `5.1.x`, or "unknown user"/"user unknown"/"no such user"/"does not exist" | `Unknown` (Dovecot's default `quota_status_nouser` is `REJECT Unknown user`) |
//! | `REJECT` with `5.2.1` | `Disabled` |
//! | `DEFER_IF_PERMIT` (Dovecot's internal error), anything else | `Err` |
//!
//! With Dovecot's usual `quota_status_nouser = DUNNO`, unknown users look
//! deliverable: chain this backend behind an existence source (a map file or
//! the LMTP probe), or set `quota_status_nouser = 550 5.1.1 User unknown`.

use crate::{
    net::{LineConn, PooledBackend, ServerSettings},
    reply::classify,
};
use async_trait::async_trait;
use nobounce_core::{
    Clock, DirectoryError, Endpoint, EnhancedStatus, RecipientDirectory, RecipientQuery,
    RecipientStatus, SystemClock,
};
use serde::Serialize;
use std::{io, sync::Arc};

const MAX_LINE: usize = 4096;
const MAX_ATTRIBUTES: usize = 64;

/// Configuration of a quota-status backend (`type = "quota_status"`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct QuotaStatusConfig {
    /// Address (the policy service: `"127.0.0.1:12340"`, `"unix:/path"`),
    /// timeout, connections and cache.
    #[serde(flatten)]
    pub server: ServerSettings,
}

impl QuotaStatusConfig {
    /// A configuration with every default and the given service address.
    pub fn new(address: Endpoint) -> Self {
        Self {
            server: ServerSettings::new(address),
        }
    }
}

/// Maps a policy `action=` value to a status (see the module table).
pub(crate) fn classify_action(action: &str) -> Result<RecipientStatus, DirectoryError> {
    let action = action.trim();
    let (word, text) = action
        .split_once(char::is_whitespace)
        .map_or((action, ""), |(w, t)| (w, t.trim_start()));
    if word.len() == 3 && word.bytes().all(|b| b.is_ascii_digit()) {
        let code: u16 = word
            .parse()
            .map_err(|_| DirectoryError::new("bad action code"))?;
        let enhanced =
            EnhancedStatus::at_start(text).filter(|e| u16::from(e.class()) == code / 100);
        return classify(code, enhanced, text)
            .map_err(|e| DirectoryError::new(format!("quota-status action {action:?}: {e}")));
    }
    let upper = word.to_ascii_uppercase();
    let refusal = match upper.as_str() {
        "OK" | "DUNNO" | "PREPEND" | "WARN" | "INFO" => return Ok(RecipientStatus::Deliverable),
        "REJECT" => 5,
        "DEFER" | "DEFER_IF_REJECT" => 4,
        _ => {
            return Err(DirectoryError::new(format!(
                "unexpected quota-status action {action:?}"
            )))
        }
    };
    let enhanced = EnhancedStatus::at_start(text).map(|e| (e.class(), e.subject(), e.detail()));
    let lower = text.to_lowercase();
    let says = |phrases: &[&str]| phrases.iter().any(|p| lower.contains(p));
    match enhanced {
        Some((_, 2, 2)) => return Ok(RecipientStatus::OverQuota { room_left: None }),
        Some((5, 2, 1)) if refusal == 5 => return Ok(RecipientStatus::Disabled),
        Some((5, 1, _)) if refusal == 5 => return Ok(RecipientStatus::Unknown),
        _ => {}
    }
    if says(&[
        "quota",
        "mailbox full",
        "mailbox is full",
        "mailbox for user is full",
    ]) {
        return Ok(RecipientStatus::OverQuota { room_left: None });
    }
    if refusal == 5
        && says(&[
            "unknown user",
            "user unknown",
            "no such user",
            "does not exist",
            "doesn't exist",
        ])
    {
        return Ok(RecipientStatus::Unknown);
    }
    Err(DirectoryError::new(format!(
        "unexpected quota-status action {action:?}"
    )))
}

/// A [`RecipientDirectory`] that asks Dovecot's quota-status service.
#[derive(Debug)]
pub struct QuotaStatus {
    backend: PooledBackend<LineConn>,
}

impl QuotaStatus {
    /// A client using the system clock for its cache.
    pub fn new(config: QuotaStatusConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A client whose cache reads time from `clock` (tests).
    pub fn with_clock(config: QuotaStatusConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            backend: PooledBackend::new(config.server, clock),
        }
    }

    fn address(&self) -> &Endpoint {
        &self.backend.settings.address
    }

    async fn exchange(conn: &mut LineConn, request: &str) -> io::Result<String> {
        conn.write_all(request.as_bytes()).await?;
        let mut action = None;
        for _ in 0..MAX_ATTRIBUTES {
            let line = conn.read_line(MAX_LINE).await?;
            if line.is_empty() {
                return action.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "reply without action=")
                });
            }
            if let Some(value) = line.strip_prefix("action=") {
                action = Some(value.to_owned());
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "reply too long"))
    }

    async fn ask(&self, request: &str) -> Result<String, DirectoryError> {
        let _slot = self.backend.slot().await?;
        let (pooled, stale) = self.backend.pool.take();
        drop(stale);
        if let Some(mut conn) = pooled {
            match Self::exchange(&mut conn, request).await {
                Ok(action) => {
                    drop(self.backend.pool.put(conn));
                    return Ok(action);
                }
                Err(error) => tracing::debug!(
                    event = "quota_status_stale_connection",
                    server = %self.address(),
                    %error,
                    "pooled connection failed; retrying on a new one"
                ),
            }
        }
        let fail = |e: io::Error| {
            DirectoryError::with_source(format!("quota-status at {}", self.address()), e)
        };
        let mut conn = LineConn::connect(self.address()).await.map_err(fail)?;
        let action = Self::exchange(&mut conn, request).await.map_err(fail)?;
        drop(self.backend.pool.put(conn));
        Ok(action)
    }
}

#[async_trait]
impl RecipientDirectory for QuotaStatus {
    async fn lookup(&self, query: &RecipientQuery<'_>) -> Result<RecipientStatus, DirectoryError> {
        // `size` is always sent (see the module documentation).
        let size = query.declared_size.unwrap_or(0);
        self.backend
            .lookup(query, "quota-status", |recipient| async move {
                let request = format!(
                    "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nrecipient={recipient}\nsize={size}\n\n"
                );
                let action = self.ask(&request).await?;
                let status = classify_action(&action).map_err(|error| {
                    DirectoryError::new(format!("quota-status at {}: {error}", self.address()))
                });
                Ok((status, Some(size)))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fake_policy, query, FakeServer};
    use std::collections::HashMap;
    use std::time::Duration;

    #[test]
    fn action_mapping() {
        use RecipientStatus::*;
        let over = OverQuota { room_left: None };
        for (action, want) in [
            ("OK", Some(Deliverable)),
            ("DUNNO", Some(Deliverable)),
            ("dunno", Some(Deliverable)),
            ("WARN odd but fine", Some(Deliverable)),
            ("552 5.2.2 Mailbox is full", Some(over.clone())),
            (
                "554 5.2.2 Quota exceeded (mailbox for user is full)",
                Some(over.clone()),
            ),
            ("452 4.2.2 Mailbox is full", Some(over.clone())),
            ("550 5.1.1 User unknown", Some(Unknown)),
            ("REJECT Unknown user", Some(Unknown)),
            ("REJECT 5.1.1 nope", Some(Unknown)),
            ("REJECT 5.2.1 disabled", Some(Disabled)),
            ("REJECT Quota exceeded", Some(over.clone())),
            ("DEFER 4.2.2 try later", Some(over.clone())),
            ("DEFER Mailbox full", Some(over.clone())),
            ("DEFER_IF_PERMIT Internal quota calculation error", None),
            ("DEFER Unknown user", None),
            ("REJECT go away", None),
            ("451 4.3.0 later", None),
            ("550 5.7.1 policy", None),
            ("HOLD", None),
            ("", None),
        ] {
            match (classify_action(action), want) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{action:?}"),
                (Err(_), None) => {}
                (got, want) => panic!("{action:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    fn answers() -> HashMap<String, Option<String>> {
        HashMap::from([
            ("alice@example.org".to_string(), Some("OK".to_string())),
            (
                "full@example.org".to_string(),
                Some("552 5.2.2 Mailbox is full".to_string()),
            ),
            (
                "broken@example.org".to_string(),
                Some("DEFER_IF_PERMIT Internal quota calculation error".to_string()),
            ),
            ("slow@example.org".to_string(), None),
        ])
    }

    fn config(server: &FakeServer) -> QuotaStatusConfig {
        let mut config = QuotaStatusConfig::new(server.endpoint.clone());
        config.server.timeout = Duration::from_secs(20);
        config
    }

    #[tokio::test]
    async fn speaks_the_policy_protocol_on_one_connection() {
        for unix in [false, true] {
            let server = fake_policy(answers(), "REJECT Unknown user", unix).await;
            let client = QuotaStatus::new(config(&server));
            use RecipientStatus::*;
            for (address, size, want) in [
                ("alice@example.org", Some(100), Some(Deliverable)),
                ("Nobody@Example.ORG", None, Some(Unknown)),
                (
                    "full@example.org",
                    Some(1),
                    Some(OverQuota { room_left: None }),
                ),
                ("broken@example.org", None, None),
                ("not an address", None, Some(NotHandled)),
            ] {
                let got = client.lookup(&query(address, size)).await;
                match want {
                    Some(status) => assert_eq!(got.expect(address), status, "{address}"),
                    None => {
                        let err = got.expect_err(address);
                        assert!(
                            err.to_string().contains("Internal quota calculation error"),
                            "{err}"
                        );
                    }
                }
            }
            assert_eq!(
                server.connections(),
                1,
                "one reused connection (unix: {unix})"
            );
            assert_eq!(
                server.commands("recipient="),
                [
                    "recipient=alice@example.org",
                    "recipient=Nobody@example.org",
                    "recipient=full@example.org",
                    "recipient=broken@example.org"
                ]
            );
            assert_eq!(
                server.commands("size="),
                ["size=100", "size=0", "size=1", "size=0"]
            );
            assert_eq!(server.commands("request=").len(), 4);
        }
    }

    #[tokio::test]
    async fn caches_answers_by_size_and_times_out() {
        let server = fake_policy(answers(), "DUNNO", false).await;
        let mut config = config(&server);
        config.server.timeout = Duration::from_secs(2);
        let client = QuotaStatus::new(config);
        client
            .lookup(&query("alice@example.org", Some(100)))
            .await
            .expect("answer");
        client
            .lookup(&query("alice@example.org", Some(50)))
            .await
            .expect("answer");
        assert_eq!(
            server.commands("recipient=").len(),
            1,
            "smaller message: cached"
        );
        client
            .lookup(&query("alice@example.org", Some(500)))
            .await
            .expect("answer");
        assert_eq!(
            server.commands("recipient=").len(),
            2,
            "bigger message: asked again"
        );
        // nouser = DUNNO: unknown users look deliverable.
        let got = client
            .lookup(&query("ghost@example.org", None))
            .await
            .expect("answer");
        assert_eq!(got, RecipientStatus::Deliverable);

        let err = client
            .lookup(&query("slow@example.org", None))
            .await
            .expect_err("timeout");
        assert!(err.to_string().contains("no answer within 2s"), "{err}");
        let got = client
            .lookup(&query("full@example.org", None))
            .await
            .expect("fresh connection after timeout");
        assert_eq!(got, RecipientStatus::OverQuota { room_left: None });
        assert_eq!(server.connections(), 2);
    }

    #[tokio::test]
    async fn unreachable_service_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = QuotaStatusConfig::new(Endpoint::Unix(dir.path().join("nothing-here")));
        let client = QuotaStatus::new(config);
        client
            .lookup(&query("alice@example.org", None))
            .await
            .expect_err("no socket");
    }
}
