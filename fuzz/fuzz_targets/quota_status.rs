//! Dovecot quota-status `action=` answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nobounce_recipients::fuzzing::classify_action;

fuzz_target!(|data: &[u8]| {
    let _ = classify_action(&String::from_utf8_lossy(data));
});
