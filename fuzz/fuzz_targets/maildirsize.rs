//! Maildir++ `maildirsize` files, as read from users' mailboxes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nobounce_recipients::maildir::MaildirSize;

fuzz_target!(|data: &[u8]| {
    if let Ok(size) = MaildirSize::parse(data) {
        for declared in [None, Some(0), Some(1), Some(u64::MAX)] {
            let _ = size.status_for(declared);
        }
    }
});
