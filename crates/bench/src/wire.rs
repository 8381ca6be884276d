//! Milter framing on top of a [`Stream`]: commands are queued in a write
//! buffer and sent with a single `write` when a reply is needed (or on
//! [`Conn::flush`]), so a macro definition and its command, or a run of
//! no-reply commands, never go out as several small segments.
//!
//! Frame format (both directions): 4-byte big-endian length of what follows,
//! one command/reply byte, payload. Payload encoding and reply parsing are
//! indymilter's `message` module.

use crate::target::{Stream, Target};
use bytes::{Buf, BytesMut};
use indymilter::message::{command::Command, reply::Reply, Message};
use std::{
    fmt::{self, Display, Formatter},
    io,
    time::Duration,
};
use tokio::time::timeout;

/// Largest reply payload accepted, as in indymilter (1 MiB).
const MAX_FRAME_LEN: usize = 1024 * 1024;

/// Why talking to the milter failed.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum WireError {
    /// An I/O error, by kind (the text varies too much to count by).
    Io(io::ErrorKind),
    /// No progress within the configured timeout.
    Timeout,
    /// The milter closed the connection while a reply was expected.
    Closed,
    /// The milter sent something the protocol does not allow here.
    Protocol(String),
}

impl Display for WireError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(kind) => write!(f, "I/O error: {kind}"),
            Self::Timeout => f.write_str("timeout"),
            Self::Closed => f.write_str("connection closed by milter"),
            Self::Protocol(what) => write!(f, "protocol error: {what}"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        Self::Io(e.kind())
    }
}

/// One connection to the milter, MTA side.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: Stream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    pub(crate) async fn open(target: &Target, io_timeout: Duration) -> Result<Self, WireError> {
        let stream = timeout(io_timeout, Stream::connect(target))
            .await
            .map_err(|_| WireError::Timeout)??;
        Ok(Self {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: Vec::with_capacity(1024),
            timeout: io_timeout,
        })
    }

    /// Appends a command to the write buffer; nothing is sent yet.
    pub(crate) fn queue(&mut self, cmd: Command) {
        let msg = cmd.into_message();
        let len = u32::try_from(msg.buffer.len() + 1).expect("command payloads are small");
        self.wbuf.extend_from_slice(&len.to_be_bytes());
        self.wbuf.push(msg.kind);
        self.wbuf.extend_from_slice(&msg.buffer);
    }

    /// Sends everything queued, with one `write_all`.
    pub(crate) async fn flush(&mut self) -> Result<(), WireError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        timeout(self.timeout, self.stream.write_all(&self.wbuf))
            .await
            .map_err(|_| WireError::Timeout)??;
        self.wbuf.clear();
        Ok(())
    }

    /// Flushes the queue, then reads and parses the next reply.
    pub(crate) async fn reply(&mut self) -> Result<Reply, WireError> {
        self.flush().await?;
        loop {
            if let Some(msg) = self.take_frame()? {
                return Reply::parse_reply(msg).map_err(|e| WireError::Protocol(e.to_string()));
            }
            let n = timeout(self.timeout, self.stream.read_buf(&mut self.rbuf))
                .await
                .map_err(|_| WireError::Timeout)??;
            if n == 0 {
                return Err(WireError::Closed);
            }
        }
    }

    fn take_frame(&mut self) -> Result<Option<Message>, WireError> {
        if self.rbuf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.rbuf[..4].try_into().expect("four bytes")) as usize;
        if len == 0 || len > MAX_FRAME_LEN {
            return Err(WireError::Protocol(format!("invalid frame length {len}")));
        }
        if self.rbuf.len() < 4 + len {
            self.rbuf.reserve(4 + len - self.rbuf.len());
            return Ok(None);
        }
        self.rbuf.advance(4);
        let kind = self.rbuf.get_u8();
        let buffer = self.rbuf.split_to(len - 1).freeze();
        Ok(Some(Message::new(kind, buffer)))
    }

    /// Sends what is queued and closes our side.
    pub(crate) async fn close(mut self) -> Result<(), WireError> {
        self.flush().await?;
        // The milter may already have gone; a failed shutdown changes nothing.
        let _ = timeout(self.timeout, self.stream.shutdown()).await;
        Ok(())
    }
}
