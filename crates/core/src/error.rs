//! The errors of ports whose backend failed: [`DirectoryError`] and
//! [`StoreError`].
//!
//! Both are an infrastructure failure, never an answer: at SMTP time a
//! directory error becomes a temporary failure, a store error is logged and
//! ignored, and neither ever becomes a rejection. They are distinct types
//! (a store error cannot be passed off as a directory error) sharing one
//! implementation, [`BackendError`].

use std::{
    error::Error,
    fmt::{self, Debug, Display, Formatter},
    marker::PhantomData,
};

/// Which port a [`BackendError`] comes from; names it in messages.
pub trait Port: 'static {
    /// What the backend is, for messages: `"recipient directory"`.
    const WHAT: &'static str;
}

/// The recipient directory port.
#[derive(Debug)]
pub enum Directory {}

impl Port for Directory {
    const WHAT: &'static str = "recipient directory";
}

/// The state store port.
#[derive(Debug)]
pub enum Store {}

impl Port for Store {
    const WHAT: &'static str = "state store";
}

/// A backend behind port `P` failed to answer: down, timed out, corrupt.
pub struct BackendError<P: Port> {
    message: String,
    source: Option<Box<dyn Error + Send + Sync>>,
    port: PhantomData<P>,
}

/// The recipient directory failed (backend down, timeout, corrupt data).
/// At SMTP time this always becomes a temporary failure (`451 4.4.3`).
pub type DirectoryError = BackendError<Directory>;

/// The state store failed (unreachable, timed out, corrupt). Never a reason
/// to refuse mail: the caller logs it and goes on as if no ban existed.
pub type StoreError = BackendError<Store>;

impl<P: Port> BackendError<P> {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
            port: PhantomData,
        }
    }

    /// An error with a message and an underlying cause.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
            port: PhantomData,
        }
    }
}

impl<P: Port> Debug for BackendError<P> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendError")
            .field("port", &P::WHAT)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl<P: Port> Display for BackendError<P> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl<P: Port> Error for BackendError<P> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_its_source_and_names_it() {
        let io = std::io::Error::other("connection refused");
        let e = DirectoryError::with_source("LMTP probe of 127.0.0.1:24", io);
        assert_eq!(
            e.to_string(),
            "LMTP probe of 127.0.0.1:24: connection refused"
        );
        assert!(e.source().is_some());
        assert!(format!("{e:?}").contains("recipient directory"));
        assert!(format!("{:?}", StoreError::new("x")).contains("state store"));
    }
}
