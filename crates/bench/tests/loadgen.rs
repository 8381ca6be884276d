//! The load generator against in-process milters on 127.0.0.1:0: the no-op
//! milter, and a scripted milter whose own counts the report must match.
//! No timing is asserted.

use indymilter::{Actions, Callbacks, Config, ContextActions, SetErrorReply, SocketInfo, Status};
use nobounce_bench::{
    run_hold, run_load, run_noop_milter, HoldConfig, LoadConfig, NoopConfig, NoopMode, Target,
    Workload,
};
use std::{
    collections::BTreeMap,
    ffi::CString,
    sync::{
        atomic::{AtomicU64, Ordering::SeqCst},
        Arc,
    },
    time::Duration,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

struct Running {
    target: Target,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().expect("stopped once").send(());
        self.task
            .await
            .expect("milter task does not panic")
            .expect("milter ran without error");
    }
}

async fn start_noop(config: NoopConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = Target::from(listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run_noop_milter(listener, config, stopped));
    Running {
        target,
        stop: Some(stop),
        task,
    }
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_milter_answers_continue_to_every_transaction() {
    let milter = start_noop(NoopConfig::default()).await;
    let config = LoadConfig {
        concurrency: 4,
        transactions: 300,
        messages_per_connection: 3,
        warmup: 20,
        workload: Workload {
            recipients: 2,
            headers: 12,
            macros: true,
            ..Workload::default()
        },
        ..LoadConfig::new(milter.target.clone())
    };
    let report = run_load(&config).await;

    assert_eq!(report.errors, BTreeMap::new());
    assert_eq!(report.transactions, 300);
    assert_eq!(report.completed, 300);
    assert_eq!(report.failed, 0);
    assert_eq!(report.statuses, counts(&[("continue", 300)]));
    assert_eq!(report.final_stages, counts(&[("eom:continue", 300)]));
    assert_eq!(report.rejected_recipients, 0);
    assert!(report.modifications.is_empty());
    assert_eq!(report.latency.count, 300);
    // 300 transactions, 3 per connection (warm-up connections not counted).
    assert_eq!(report.connections, 100);
    assert_eq!(report.setup_latency.count, 100);
    // Every message has a latency with setup; the first of each connection
    // waited for the setup too, so the longest is at least the longest
    // setup and the slowest transaction (latencies are not additive).
    assert_eq!(report.message_latency.count, 300);
    assert!(report.message_latency.max_us >= report.setup_latency.max_us);
    assert!(report.message_latency.max_us >= report.latency.max_us);
    assert!(report.latency.p50_us <= report.latency.p99_us);
    assert!(report.latency.p99_us <= report.latency.max_us);

    milter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn milter_without_callbacks_is_skipped_to_end_of_message() {
    // indymilter then negotiates NO_CONNECT, NO_MAIL, ... and the load
    // generator must send only end-of-message.
    let milter = start_noop(NoopConfig {
        mode: NoopMode::Plain,
        ..NoopConfig::default()
    })
    .await;
    let config = LoadConfig {
        concurrency: 3,
        transactions: 200,
        messages_per_connection: 7,
        workload: Workload {
            headers: 12,
            ..Workload::default()
        },
        ..LoadConfig::new(milter.target.clone())
    };
    let report = run_load(&config).await;

    assert_eq!(report.errors, BTreeMap::new());
    assert_eq!(report.completed, 200);
    assert_eq!(report.statuses, counts(&[("continue", 200)]));
    milter.stop().await;
}

/// Issue 8: the policy floor answers HELO, MAIL, RCPT and end of message
/// only; connect, headers and end of headers go without reply, DATA and the
/// body are skipped. The load generator honours all of it, and reports the
/// milter's CPU time per transaction when given its pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue8_policy_floor_and_cpu_time_per_transaction() {
    let milter = start_noop(NoopConfig {
        mode: NoopMode::Policy,
        ..NoopConfig::default()
    })
    .await;
    let config = LoadConfig {
        concurrency: 2,
        transactions: 200,
        messages_per_connection: 1,
        workload: Workload {
            headers: 30,
            macros: true,
            ..Workload::default()
        },
        // The milter runs in this process.
        target_pid: Some(std::process::id()),
        ..LoadConfig::new(milter.target.clone())
    };
    let report = run_load(&config).await;
    assert_eq!(report.errors, BTreeMap::new());
    assert_eq!(report.statuses, counts(&[("continue", 200)]));
    assert_eq!(report.connections, 200, "one message per connection");
    assert!(report.target_cpu_secs.is_some());
    assert!(report.target_cpu_us_per_txn.is_some());
    milter.stop().await;
}

#[test]
fn postfix_like_headers() {
    let names: Vec<&str> = (0..12)
        .map(|n| nobounce_bench::workload::header(n, "a@d.test", "ABC").0)
        .collect();
    assert_eq!(
        &names[..4],
        ["Received", "Received", "DKIM-Signature", "From"]
    );
    let (_, dkim) = nobounce_bench::workload::header(2, "a@d.test", "ABC");
    assert!(dkim.len() > 300, "a DKIM signature is long");
    assert_eq!(
        nobounce_bench::workload::header(25, "a@d.test", "ABC").0,
        "Received"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_milter_can_insert_headers_like_a_real_milter() {
    let milter = start_noop(NoopConfig {
        insert_headers: 2,
        ..NoopConfig::default()
    })
    .await;
    let config = LoadConfig {
        concurrency: 2,
        transactions: 50,
        messages_per_connection: 5,
        workload: Workload {
            headers: 12,
            ..Workload::default()
        },
        ..LoadConfig::new(milter.target.clone())
    };
    let report = run_load(&config).await;

    assert_eq!(report.errors, BTreeMap::new());
    assert_eq!(report.statuses, counts(&[("continue", 50)]));
    assert_eq!(report.modifications, counts(&[("insert_header", 100)]));
    milter.stop().await;
}

/// What the scripted milter decided, counted on its side.
#[derive(Default)]
struct Decisions {
    connect_rejects: AtomicU64,
    mail_rejects: AtomicU64,
    rcpt_rejects: AtomicU64,
    rcpt_tempfails: AtomicU64,
    eom_accepts: AtomicU64,
    aborts: AtomicU64,
    missing_macros: AtomicU64,
}

/// Rejects connections from 192.0.2.1 (4xx), MAIL from d2.bench.test
/// (550 5.7.1), RCPT user0 (550 5.1.1), tempfails RCPT user1, and accepts
/// the rest at end of message after adding a header.
fn scripted(d: Arc<Decisions>) -> Callbacks<()> {
    let (d1, d2, d3, d4, d5) = (d.clone(), d.clone(), d.clone(), d.clone(), d);
    Callbacks::new()
        .on_connect(move |cx, _, socket| {
            let d = d1.clone();
            Box::pin(async move {
                let addr = cx.macros.get(c"{client_addr}").map(|v| v.to_owned());
                let SocketInfo::Inet(peer) = socket else {
                    panic!("inet socket info expected")
                };
                if addr != Some(CString::new(peer.ip().to_string()).unwrap()) {
                    d.missing_macros.fetch_add(1, SeqCst);
                }
                if peer.ip().to_string() == "192.0.2.1" {
                    d.connect_rejects.fetch_add(1, SeqCst);
                    cx.reply
                        .set_error_reply("421", Some("4.3.2"), ["not now"])
                        .unwrap();
                    return Status::Tempfail;
                }
                Status::Continue
            })
        })
        .on_mail(move |cx, args| {
            let d = d2.clone();
            Box::pin(async move {
                if cx.macros.get(c"i").is_none() {
                    d.missing_macros.fetch_add(1, SeqCst);
                }
                if args[0].to_str().unwrap().ends_with("@d2.bench.test>") {
                    d.mail_rejects.fetch_add(1, SeqCst);
                    cx.reply
                        .set_error_reply("550", Some("5.7.1"), ["sender refused"])
                        .unwrap();
                    return Status::Reject;
                }
                Status::Continue
            })
        })
        .on_rcpt(move |cx, args| {
            let d = d3.clone();
            Box::pin(async move {
                let rcpt = args[0].to_str().unwrap();
                if rcpt.starts_with("<user0@") {
                    d.rcpt_rejects.fetch_add(1, SeqCst);
                    cx.reply
                        .set_error_reply("550", Some("5.1.1"), ["no such user"])
                        .unwrap();
                    Status::Reject
                } else if rcpt.starts_with("<user1@") {
                    d.rcpt_tempfails.fetch_add(1, SeqCst);
                    Status::Tempfail
                } else {
                    Status::Continue
                }
            })
        })
        .on_eom(move |cx| {
            let d = d4.clone();
            Box::pin(async move {
                cx.actions
                    .add_header("X-Bench", "seen")
                    .await
                    .expect("header added");
                d.eom_accepts.fetch_add(1, SeqCst);
                Status::Accept
            })
        })
        .on_abort(move |_| {
            let d = d5.clone();
            Box::pin(async move {
                d.aborts.fetch_add(1, SeqCst);
                Status::Continue
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_matches_what_the_milter_decided() {
    let decisions = Arc::new(Decisions::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = Target::from(listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let milter = tokio::spawn(indymilter::run(
        listener,
        scripted(decisions.clone()),
        Config {
            actions: Actions::ADD_HEADER,
            ..Config::default()
        },
        stopped,
    ));

    let n = 400;
    let config = LoadConfig {
        concurrency: 5,
        transactions: n,
        messages_per_connection: 4,
        workload: Workload {
            domains: 5,
            zipf: 0.5,
            client_ips: 20,
            recipients: 1,
            rcpt_users: 3,
            macros: true,
            ..Workload::default()
        },
        ..LoadConfig::new(target)
    };
    let report = run_load(&config).await;
    let _ = stop.send(());
    milter.await.unwrap().unwrap();

    let get = |a: &AtomicU64| a.load(SeqCst);
    let (connect, mail, rcpt_r, rcpt_t, eom) = (
        get(&decisions.connect_rejects),
        get(&decisions.mail_rejects),
        get(&decisions.rcpt_rejects),
        get(&decisions.rcpt_tempfails),
        get(&decisions.eom_accepts),
    );
    // Every path was taken, so the comparison below means something.
    for (what, c) in [
        ("connect", connect),
        ("mail", mail),
        ("rcpt reject", rcpt_r),
        ("rcpt tempfail", rcpt_t),
        ("eom", eom),
    ] {
        assert!(c > 0, "no {what} decisions: {report}");
    }
    assert_eq!(get(&decisions.missing_macros), 0);

    assert_eq!(report.errors, BTreeMap::new(), "{report}");
    assert_eq!(report.completed, n);
    assert_eq!(connect + mail + rcpt_r + rcpt_t + eom, n);
    assert_eq!(
        report.final_stages,
        counts(&[
            ("connect:tempfail", connect),
            ("mail:reject", mail),
            ("rcpt:reject", rcpt_r),
            ("rcpt:tempfail", rcpt_t),
            ("eom:accept", eom),
        ])
    );
    assert_eq!(
        report.statuses,
        counts(&[
            ("tempfail", connect + rcpt_t),
            ("reject", mail + rcpt_r),
            ("accept", eom),
        ])
    );
    assert_eq!(
        report.reply_codes,
        counts(&[
            ("421 4.3.2", connect),
            ("550 5.7.1", mail),
            ("550 5.1.1", rcpt_r),
        ])
    );
    assert_eq!(report.rejected_recipients, rcpt_r + rcpt_t);
    assert_eq!(report.modifications, counts(&[("add_header", eom)]));
    // Transactions decided at connect have no MAIL-to-EOM latency.
    assert_eq!(report.latency.count, n - connect);
    // Every transaction refused at RCPT was aborted (after a refusal at
    // MAIL the milter has already left the transaction: indymilter, like
    // libmilter, ignores that abort).
    assert_eq!(get(&decisions.aborts), rcpt_r + rcpt_t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_keeps_many_connections_open_at_once() {
    let milter = start_noop(NoopConfig::default()).await;
    let config = HoldConfig {
        connections: 200,
        hold: Duration::from_millis(200),
        open_concurrency: 50,
        ..HoldConfig::new(milter.target.clone())
    };
    let report = run_hold(&config).await;

    assert_eq!(report.open_errors, BTreeMap::new());
    assert_eq!(report.established, 200);
    assert_eq!(report.after_hold_statuses, counts(&[("continue", 200)]));
    assert_eq!(report.after_hold_errors, BTreeMap::new());
    milter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_reports_connections_beyond_the_milter_limit() {
    let milter = start_noop(NoopConfig {
        max_connections: 10,
        ..NoopConfig::default()
    })
    .await;
    let config = HoldConfig {
        connections: 25,
        hold: Duration::from_millis(100),
        open_concurrency: 25,
        // Connections past the limit sit in the listen backlog and never
        // get a negotiation reply while the first ten are held.
        timeout: Duration::from_secs(2),
        ..HoldConfig::new(milter.target.clone())
    };
    let report = run_hold(&config).await;

    assert_eq!(report.established, 10, "{report}");
    assert_eq!(report.open_errors, counts(&[("negotiate: timeout", 15)]));
    assert_eq!(report.after_hold_statuses, counts(&[("continue", 10)]));
    milter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_target() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milter.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let milter = tokio::spawn(indymilter::run(
        listener,
        Callbacks::<()>::new().on_mail(|_, _| Box::pin(async { Status::Continue })),
        Config::default(),
        stopped,
    ));
    let target: Target = format!("unix:{}", path.display()).parse().unwrap();
    let report = run_load(&LoadConfig {
        concurrency: 2,
        transactions: 50,
        ..LoadConfig::new(target)
    })
    .await;
    let _ = stop.send(());
    milter.await.unwrap().unwrap();

    assert_eq!(report.errors, BTreeMap::new());
    assert_eq!(report.statuses, counts(&[("continue", 50)]));
}
