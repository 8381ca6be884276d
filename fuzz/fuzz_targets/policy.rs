//! The policy delegation protocol as a peer writes it (Postfix, Exim, or
//! anyone who can reach the socket), and the qmail plugin's environment and
//! answers: never a panic, bounded, and a request the plugin writes always
//! reads back as one request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nobounce_policy::{
    qmail::{Answer, Mode, QmailEnv},
    read_request,
};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut input = tokio::io::BufReader::new(data);
        // Read requests until the end or the first error.
        for _ in 0..64 {
            match read_request(&mut input).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    });
    let text = String::from_utf8_lossy(data);
    let answer = Answer::from_action(&text);
    let out = answer.spp_output();
    assert!(out.is_empty() || (out.ends_with('\n') && out.matches('\n').count() == 1), "{out:?}");
    assert!(!out.contains('\r') && !out.contains('\0'), "{out:?}");
    let _ = answer.rcptcheck_exit();
    // Whatever qmail-smtpd puts in the environment, the request the plugin
    // writes is one well-formed request.
    let mut parts = text.splitn(4, '\u{1}');
    let env = QmailEnv {
        remote_ip: parts.next().unwrap_or("").to_owned(),
        helo: parts.next().unwrap_or("").to_owned(),
        sender: parts.next().unwrap_or("").to_owned(),
        recipient: parts.next().unwrap_or("").to_owned(),
        ..Default::default()
    };
    let request = env.request(Mode::SppRcpt);
    let parsed = rt.block_on(async {
        let mut input = tokio::io::BufReader::new(request.as_bytes());
        let first = read_request(&mut input).await;
        let second = read_request(&mut input).await;
        (first, second)
    });
    if request.len() < 60_000 && request.lines().all(|l| l.len() < 8000) {
        assert!(matches!(parsed.0, Ok(Some(_))), "{request:?}: {:?}", parsed.0);
        assert!(matches!(parsed.1, Ok(None)), "{request:?}");
    }
});
