//! Where each key of a configuration file is: the raw TOML document with
//! spans (`toml::de::DeTable`, whose keys and values are `toml::Spanned`),
//! indexed by dotted key path.

use std::{collections::BTreeMap, ops::Range};
use toml::{
    de::{DeTable, DeValue},
    Spanned,
};

/// A position in a configuration file, 1-based.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Position {
    /// The line.
    pub line: usize,
    /// The column, in characters.
    pub column: usize,
}

/// The text of a configuration file and where each key path is in it.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// The file name, or another name for the text, for messages.
    pub origin: String,
    text: String,
    /// Dotted key path (`spf.timeout`, `recipients.routes[0].chain`) to the
    /// span of the key that sets it (or of the array element).
    keys: BTreeMap<String, Range<usize>>,
}

impl Source {
    /// Indexes `text`; a document that does not parse gives an empty index
    /// (its parse error is reported on its own).
    pub fn new(origin: &str, text: &str) -> Self {
        let mut keys = BTreeMap::new();
        if let Ok(root) = DeTable::parse(text) {
            walk_table("", root.get_ref(), &mut keys);
        }
        Self {
            origin: origin.to_owned(),
            text: text.to_owned(),
            keys,
        }
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Where `path` is set; when it is not set, where its nearest set parent
    /// (its table) is; `None` when nothing on the way is in the file.
    pub fn position_of(&self, path: &str) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(span) = self.keys.get(path) {
                return Some(self.position_at(span.start));
            }
            path = parent(path)?;
        }
    }

    /// The line and column of byte `offset`.
    pub fn position_at(&self, offset: usize) -> Position {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rfind('\n')
            .map_or(before, |i| &before[i + 1..])
            .chars()
            .count()
            + 1;
        Position { line, column }
    }

    /// The innermost key path whose key or value holds byte `offset`.
    pub fn path_at(&self, offset: usize) -> Option<&str> {
        // Key spans only cover the key; find the last key that starts at or
        // before the offset on the same line, or the innermost that covers
        // it.
        let line_start = self.text[..offset.min(self.text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        self.keys
            .iter()
            .filter(|(_, span)| span.start >= line_start && span.start <= offset)
            .max_by_key(|(path, span)| (span.start, path.len()))
            .map(|(path, _)| path.as_str())
    }
}

/// `a.b[2].c` → `a.b[2]` → `a.b` → `a` → `None`.
fn parent(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk_table(prefix: &str, table: &DeTable<'_>, keys: &mut BTreeMap<String, Range<usize>>) {
    for (key, value) in table.iter() {
        let path = join(prefix, key.get_ref());
        keys.insert(path.clone(), key.span());
        walk_value(&path, value, keys);
    }
}

fn walk_value(path: &str, value: &Spanned<DeValue<'_>>, keys: &mut BTreeMap<String, Range<usize>>) {
    match value.get_ref() {
        DeValue::Table(t) => walk_table(path, t, keys),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = format!("{path}[{i}]");
                keys.insert(p.clone(), item.span());
                walk_value(&p, item, keys);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "dry_run = true\n\n[dns]\ntimeout_secs = 3\n\n[spf]\ntimeout_secs = 0\n\n[[recipients.routes]]\ndomains = [\"a.test\"]\nchain = [\"x\"]\n";

    #[test]
    fn keys_are_found_in_their_own_table() {
        let s = Source::new("f", TEXT);
        assert_eq!(s.position_of("dns.timeout_secs").map(|p| p.line), Some(4));
        assert_eq!(s.position_of("spf.timeout_secs").map(|p| p.line), Some(7));
        assert_eq!(
            s.position_of("recipients.routes[0].chain").map(|p| p.line),
            Some(11)
        );
        assert_eq!(
            s.position_of("recipients.routes[0].chain[0]")
                .map(|p| (p.line, p.column)),
            Some((11, 10))
        );
        // Not set: the table it would be in.
        assert_eq!(s.position_of("spf.on_fail").map(|p| p.line), Some(6));
        assert_eq!(s.position_of("store.redis.url"), None);
    }

    #[test]
    fn path_at_an_offset() {
        let s = Source::new("f", TEXT);
        let offset = TEXT.find("timeout_secs = 0").expect("present") + 15;
        assert_eq!(s.path_at(offset), Some("spf.timeout_secs"));
    }
}
