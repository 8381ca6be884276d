//! The configuration file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nobounce_config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_toml_str_named(text, "fuzz.toml") {
        // What is accepted prints and reads back the same.
        Ok(config) if !config.store.redis.url.contains('@') => {
            let printed = config.to_toml();
            let again = Config::from_toml_str(&printed)
                .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}: {e}"));
            assert_eq!(again, config, "{printed}");
        }
        // A Redis password is printed as ***.
        Ok(config) => {
            let _ = config.to_toml();
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            let _ = errors.to_string();
        }
    }
});
