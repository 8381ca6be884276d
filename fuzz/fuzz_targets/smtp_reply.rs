//! Replies of LMTP/SMTP servers (the RCPT probe), and what they mean for a
//! recipient.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nobounce_core::smtp_reply::ReplyParser;
use nobounce_recipients::fuzzing::classify_reply;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parser = ReplyParser::default();
    for line in text.split('\n') {
        match parser.push(line.trim_end_matches('\r')) {
            Ok(Some(reply)) => {
                assert!((200..=599).contains(&reply.code));
                let _ = classify_reply(reply.code, reply.status, reply.first_line());
            }
            Ok(None) => {}
            Err(_) => parser = ReplyParser::default(),
        }
    }
});
