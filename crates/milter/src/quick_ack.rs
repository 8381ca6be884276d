//! [`QuickAck`]: a milter connection over TCP that acknowledges at once
//! what the MTA sends when the MTA waits for no reply, and sends the
//! replies to one command together.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// A TCP milter connection that acknowledges at once (`TCP_QUICKACK`) each
/// read that ends with a command getting no reply.
///
/// Postfix writes each milter command on its own and leaves Nagle's
/// algorithm on. After a command that gets no reply (macros, and connect,
/// HELO, headers and end of headers with `SMFIP_NR_*`), its next small
/// write waits until the previous one is acknowledged, and a milter with
/// nothing to say sends that ACK only when its delayed-ACK timer fires:
/// about 40 ms per message through Postfix over TCP (found by the
/// benchmark of issue 8).
///
/// After a command that gets a reply (negotiation, MAIL, RCPT, end of
/// message) the ACK rides on the reply, so quick ACKs are left off there: a
/// separate ACK would cost both sides one more wake-up per command. Quick
/// ACK mode is renewed on each read that needs it, as the kernel falls
/// back to delayed ACKs by itself.
///
/// Replies are sent together: indymilter flushes each reply on its own,
/// so at end of message a header insertion and the final reply would be
/// two segments and two wake-ups of the MTA. Here a flush only marks the
/// replies as complete; they are sent when the milter next reads (it has
/// nothing more to say to this command), at shutdown, or at drop.
#[derive(Debug)]
pub struct QuickAck {
    stream: TcpStream,
    frames: Frames,
    /// Replies written, not yet sent.
    pending: Vec<u8>,
    /// How much of `pending` is sent already.
    sent: usize,
}

/// Replies held back at most; past it they are sent at once.
const MAX_PENDING: usize = 64 * 1024;

impl QuickAck {
    /// Wraps an accepted milter connection.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            frames: Frames::default(),
            pending: Vec::new(),
            sent: 0,
        }
    }

    /// Sends the replies held back.
    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.pending[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// The TCP connection.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    fn ack_now(&self) {
        // Best effort: without it, mail is only slower.
        let _ = socket2::SockRef::from(&self.stream).set_tcp_quickack(true);
    }
}

/// Where the stream from the MTA stands in milter frames: a 4-byte
/// big-endian length, then that many bytes, the first being the command.
#[derive(Debug, Default)]
struct Frames {
    /// Bytes of the length prefix read so far.
    prefix: [u8; 4],
    prefix_read: usize,
    /// Bytes of the current frame still to come, command included.
    remaining: u32,
    /// The command of the current (or, at a boundary, the last) frame.
    command: Option<u8>,
}

impl Frames {
    /// Follows `bytes`, read from the MTA.
    fn read(&mut self, mut bytes: &[u8]) {
        while let Some(&first) = bytes.first() {
            if self.remaining == 0 {
                self.prefix[self.prefix_read] = first;
                self.prefix_read += 1;
                bytes = &bytes[1..];
                if self.prefix_read == self.prefix.len() {
                    self.prefix_read = 0;
                    // The command byte always follows, as indymilter reads
                    // it: a length of 0 counts as 1 (a command, no data).
                    self.remaining = u32::from_be_bytes(self.prefix).max(1);
                    self.command = None;
                }
                continue;
            }
            if self.command.is_none() {
                self.command = Some(first);
            }
            let n = bytes
                .len()
                .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            // `n` ≤ `remaining`, so it fits.
            self.remaining -= u32::try_from(n).unwrap_or(self.remaining);
            bytes = &bytes[n..];
        }
    }

    /// Whether everything read so far ends with a whole command that gets
    /// a reply: negotiation, MAIL, RCPT or end of message. Anything else
    /// (a macro or no-reply command, or a frame not yet complete) may have
    /// the MTA wait for our ACK.
    fn awaits_reply(&self) -> bool {
        self.remaining == 0
            && self.prefix_read == 0
            && matches!(self.command, Some(b'O' | b'M' | b'R' | b'E'))
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        // The milter reads: its replies to the last command are complete.
        std::task::ready!(me.poll_send_pending(cx))?;
        let before = buf.filled().len();
        let polled = Pin::new(&mut me.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = &buf.filled()[before..];
            if !read.is_empty() {
                me.frames.read(read);
                if !me.frames.awaits_reply() {
                    me.ack_now();
                }
            }
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.pending.len() + buf.len() > MAX_PENDING {
            std::task::ready!(me.poll_send_pending(cx))?;
            if buf.len() > MAX_PENDING {
                return Pin::new(&mut me.stream).poll_write(cx, buf);
            }
        }
        me.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Held back until the next read (see [`QuickAck`]).
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Sends the replies held back if the socket takes them now, then
    /// shuts down. A peer that stopped reading while its socket buffer is
    /// full does not hold the shutdown up: what it would not read is
    /// dropped (indymilter's shutdown has no timeout of its own).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.poll_send_pending(cx).is_pending() {
            me.pending.clear();
            me.sent = 0;
        }
        Pin::new(&mut me.stream).poll_shutdown(cx)
    }
}

impl Drop for QuickAck {
    fn drop(&mut self) {
        // Dropped without a shutdown: send what is left if the socket
        // takes it now (a few replies always fit its buffer).
        if self.sent < self.pending.len() {
            let _ = self.stream.try_write(&self.pending[self.sent..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoDelay;
    use indymilter::Listener;
    use std::io::{Read, Write};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    /// A milter frame: length, command, data.
    fn frame(command: u8, data: &[u8]) -> Vec<u8> {
        let len = u32::try_from(data.len() + 1).expect("small");
        let mut f = len.to_be_bytes().to_vec();
        f.push(command);
        f.extend_from_slice(data);
        f
    }

    fn after(reads: &[&[u8]]) -> bool {
        let mut frames = Frames::default();
        for r in reads {
            frames.read(r);
        }
        frames.awaits_reply()
    }

    #[test]
    fn commands_with_a_reply_need_no_quick_ack() {
        for command in [b'O', b'M', b'R', b'E'] {
            assert!(after(&[&frame(command, b"<a@b>\0")]), "{}", command as char);
        }
    }

    #[test]
    fn macros_and_no_reply_commands_need_a_quick_ack() {
        for command in [b'D', b'C', b'H', b'L', b'N', b'A', b'Q', b'B'] {
            assert!(!after(&[&frame(command, b"x\0")]), "{}", command as char);
        }
    }

    #[test]
    fn the_last_whole_frame_of_a_read_decides() {
        let macros = frame(b'D', b"Mi\0ABC123\0");
        let mail = frame(b'M', b"<a@b>\0");
        assert!(after(&[&[macros.clone(), mail.clone()].concat()]));
        assert!(!after(&[&[mail, macros].concat()]));
    }

    #[test]
    fn a_frame_not_yet_whole_needs_a_quick_ack() {
        let rcpt = frame(b'R', b"<someone@example.org>\0");
        for cut in 1..rcpt.len() {
            let (a, b) = rcpt.split_at(cut);
            assert!(!after(&[a]), "cut at {cut}");
            assert!(after(&[a, b]), "cut at {cut}");
        }
    }

    /// indymilter reads a command byte after a length of 0 (a command
    /// without data); the frames stay in step with it.
    #[test]
    fn a_zero_length_still_carries_a_command() {
        let abort_then_mail = [&[0, 0, 0, 0, b'A'][..], &frame(b'M', b"<a@b>\0")].concat();
        assert!(after(&[&abort_then_mail]));
        assert!(after(&[&[0, 0, 0, 0, b'E']]));
        assert!(!after(&[&[0, 0, 0, 0, b'D']]));
    }

    #[test]
    fn odd_lengths_do_not_panic() {
        assert!(!after(&[&[0, 0, 0, 0]]), "an empty frame");
        assert!(!after(&[&[0xff, 0xff, 0xff, 0xff, b'M', 1, 2, 3]]));
        let mut frames = Frames::default();
        frames.read(&[0xff; 64]);
        frames.read(&[0; 4096]);
        assert!(!frames.awaits_reply());
    }

    /// After a command and its reply the kernel has the connection in
    /// delayed-ACK ("ping-pong") mode; macros, which get no reply, must
    /// still be acknowledged at once, or Postfix's next write waits for
    /// the delayed-ACK timer (issue 8).
    #[tokio::test(flavor = "current_thread")]
    async fn macros_turn_quick_acks_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut listener = NoDelay(listener);
        let mail = frame(b'M', b"<a@b>\0");
        let macros = frame(b'D', b"Ri\0ABC\0");
        let (m, d) = (mail.clone(), macros.clone());
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).expect("connect");
            let mut buf = [0u8; 5];
            for _ in 0..3 {
                c.write_all(&m).expect("write");
                c.read_exact(&mut buf).expect("read");
            }
            c.write_all(&d).expect("write");
            c
        });
        let mut server = std::future::poll_fn(|cx| listener.poll_accept(cx))
            .await
            .expect("accept");
        let mut buf = vec![0u8; mail.len()];
        for _ in 0..3 {
            server.read_exact(&mut buf).await.expect("read");
            server.write_all(&frame(b'c', b"")).await.expect("write");
        }
        // Replies sent: the kernel has left quick-ACK mode by now.
        let mut last = vec![0u8; macros.len()];
        server.read_exact(&mut last).await.expect("read");
        let on = socket2::SockRef::from(server.get_ref())
            .tcp_quickack()
            .expect("getsockopt TCP_QUICKACK");
        assert!(on, "quick ACKs are on after macros");
        drop(client.join().expect("client"));
    }

    async fn pair() -> (QuickAck, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(addr).expect("connect");
        client
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("timeout");
        let mut listener = NoDelay(listener);
        let server = std::future::poll_fn(|cx| listener.poll_accept(cx))
            .await
            .expect("accept");
        (server, client)
    }

    /// What the client can read within its read timeout.
    fn available(client: &mut std::net::TcpStream) -> Vec<u8> {
        let mut buf = [0u8; 1024];
        match client.read(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Vec::new()
            }
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Issue 8: a header insertion and the final reply leave together,
    /// when the milter turns to read the next command.
    #[tokio::test(flavor = "current_thread")]
    async fn replies_to_one_command_are_sent_together_at_the_next_read() {
        let (mut server, mut client) = pair().await;
        let insert = frame(b'i', b"\0\0\0\0X-Test\0yes\0");
        let cont = frame(b'c', b"");
        server.write_all(&insert).await.expect("write");
        server.flush().await.expect("flush");
        server.write_all(&cont).await.expect("write");
        server.flush().await.expect("flush");
        // Blocks this (test) thread for the read timeout: nothing can be
        // sent meanwhile.
        let early = available(&mut client);
        assert!(early.is_empty(), "sent before the read: {early:?}");
        let client = tokio::task::spawn_blocking(move || {
            client.write_all(&frame(b'Q', b"")).expect("write");
            let mut both = Vec::new();
            while both.len() < insert.len() + cont.len() {
                let got = available(&mut client);
                assert!(!got.is_empty(), "replies not sent: {both:?}");
                both.extend(got);
            }
            assert_eq!(both, [insert, cont].concat());
        });
        let mut quit = [0u8; 5];
        server.read_exact(&mut quit).await.expect("read");
        client.await.expect("client");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn replies_are_sent_at_shutdown_and_at_drop() {
        for shutdown in [true, false] {
            let (mut server, mut client) = pair().await;
            let reply = frame(b'c', b"");
            server.write_all(&reply).await.expect("write");
            server.flush().await.expect("flush");
            if shutdown {
                server.shutdown().await.expect("shutdown");
            }
            drop(server);
            let got = tokio::task::spawn_blocking(move || available(&mut client))
                .await
                .expect("client");
            assert_eq!(got, reply, "shutdown: {shutdown}");
        }
    }

    /// indymilter's shutdown has no timeout: replies held back for a peer
    /// that stopped reading (its socket buffer full) must not hold it up.
    #[tokio::test(flavor = "current_thread")]
    async fn a_peer_that_stopped_reading_does_not_hold_up_the_shutdown() {
        let (mut server, client) = pair().await;
        // Fill the socket buffers: writes past MAX_PENDING go to the socket.
        let chunk = vec![0u8; 1 << 20];
        let wait = std::time::Duration::from_millis(200);
        while tokio::time::timeout(wait, server.write_all(&chunk))
            .await
            .is_ok()
        {}
        server
            .write_all(&frame(b'c', b""))
            .await
            .expect("held back");
        let shutdown =
            tokio::time::timeout(std::time::Duration::from_secs(5), server.shutdown()).await;
        assert!(
            shutdown.is_ok(),
            "the shutdown waited for a peer that does not read"
        );
        drop(client);
    }
}
