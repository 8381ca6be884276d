//! The error of a port whose backend failed.

use std::{
    error::Error,
    fmt::{self, Display, Formatter},
};

/// A backend behind a port failed to answer: a directory or store down, a
/// timeout, corrupt data.
///
/// It is an infrastructure failure, never an answer: at SMTP time it becomes
/// a temporary failure (a directory) or is logged and ignored (a store), and
/// never a rejection. [`DirectoryError`](crate::DirectoryError) and
/// [`StoreError`](crate::StoreError) are this type.
#[derive(Debug)]
pub struct BackendError {
    message: String,
    source: Option<Box<dyn Error + Send + Sync>>,
}

impl BackendError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
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
        }
    }
}

impl Display for BackendError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl Error for BackendError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}
