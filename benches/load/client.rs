//! An MQTT 3.1.1 connection on tokio: reads in large chunks and hands every whole packet
//! of a chunk to the caller, so a subscriber costs one syscall per many messages.

use crate::wire::{self, Packet};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub struct Reader {
    half: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Reader {
    /// Waits for at least one whole packet, then calls `each` for every whole packet read.
    pub async fn packets(&mut self, mut each: impl FnMut(Packet<'_>)) -> io::Result<()> {
        loop {
            let mut seen = false;
            loop {
                match wire::parse(&self.buf[self.start..self.end]) {
                    Ok(Some((packet, used))) => {
                        each(packet);
                        self.start += used;
                        seen = true;
                    }
                    Ok(None) => break,
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
            }
            if seen {
                return Ok(());
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.half.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.end += n;
        }
    }

    /// The next packet, whatever it is (for handshakes).
    pub async fn next_kind(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut first = None;
        // Only one packet is consumed: handshakes answer one request at a time.
        loop {
            if let Some((packet, used)) = wire::parse(&self.buf[self.start..self.end])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                first = Some((packet.kind, packet.body.to_vec()));
                self.start += used;
            }
            if let Some(found) = first.take() {
                return Ok(found);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self.half.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.end += n;
        }
    }
}

pub struct Conn {
    pub reader: Reader,
    pub writer: OwnedWriteHalf,
}

/// CONNECT and wait for CONNACK. `Ok(Err(code))` is a refusal.
pub async fn connect(
    port: u16,
    client_id: &str,
    login: Option<(&str, &str)>,
) -> io::Result<Result<Conn, u8>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (read, mut writer) = stream.into_split();
    let mut out = Vec::with_capacity(128);
    wire::connect(&mut out, client_id, login, true);
    writer.write_all(&out).await?;
    let mut reader = Reader {
        half: read,
        buf: vec![0; 64 * 1024],
        start: 0,
        end: 0,
    };
    let (kind, body) = reader.next_kind().await?;
    if kind != wire::CONNACK || body.len() < 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "expected CONNACK",
        ));
    }
    if body[1] != 0 {
        return Ok(Err(body[1]));
    }
    Ok(Ok(Conn { reader, writer }))
}

impl Conn {
    /// SUBSCRIBE and wait for SUBACK; the granted QoS (0x80 = refused).
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> io::Result<u8> {
        let mut out = Vec::new();
        wire::subscribe(&mut out, 1, filter, qos);
        self.writer.write_all(&out).await?;
        loop {
            let (kind, body) = self.reader.next_kind().await?;
            if kind == wire::SUBACK {
                return Ok(*body.get(2).unwrap_or(&0x80));
            }
        }
    }

    pub async fn disconnect(mut self) {
        let mut out = Vec::new();
        wire::disconnect(&mut out);
        let _ = self.writer.write_all(&out).await;
        let _ = self.writer.shutdown().await;
    }
}
