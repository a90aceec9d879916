//! MQTT 3.1.1 packets, as few as the load generator needs, encoded into and parsed out of
//! plain byte buffers so one read or write carries many packets.

pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const SUBACK: u8 = 9;

fn remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn string(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text);
}

pub fn connect(out: &mut Vec<u8>, client_id: &str, login: Option<(&str, &str)>, clean: bool) {
    let mut body = Vec::with_capacity(64);
    string(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    let mut flags = if clean { 0x02 } else { 0 };
    if login.is_some() {
        flags |= 0xC0;
    }
    body.push(flags);
    body.extend_from_slice(&0u16.to_be_bytes()); // no keep-alive: idle clients stay
    string(&mut body, client_id.as_bytes());
    if let Some((user, pass)) = login {
        string(&mut body, user.as_bytes());
        string(&mut body, pass.as_bytes());
    }
    out.push(0x10);
    remaining_length(out, body.len());
    out.extend_from_slice(&body);
}

pub fn subscribe(out: &mut Vec<u8>, packet_id: u16, filter: &str, qos: u8) {
    out.push(0x82);
    remaining_length(out, 2 + 2 + filter.len() + 1);
    out.extend_from_slice(&packet_id.to_be_bytes());
    string(out, filter.as_bytes());
    out.push(qos);
}

pub fn publish(out: &mut Vec<u8>, topic: &str, payload: &[u8], qos: u8, packet_id: u16) {
    out.push(0x30 | (qos << 1));
    let id_len = if qos > 0 { 2 } else { 0 };
    remaining_length(out, 2 + topic.len() + id_len + payload.len());
    string(out, topic.as_bytes());
    if qos > 0 {
        out.extend_from_slice(&packet_id.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

pub fn puback(out: &mut Vec<u8>, packet_id: u16) {
    out.extend_from_slice(&[0x40, 2]);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

pub fn disconnect(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xE0, 0]);
}

/// One packet inside a buffer.
pub struct Packet<'a> {
    pub kind: u8,
    pub flags: u8,
    pub body: &'a [u8],
}

impl<'a> Packet<'a> {
    /// `(topic, packet id (0 at QoS 0), qos, payload)` of a PUBLISH.
    pub fn publish(&self) -> Option<(&'a [u8], u16, u8, &'a [u8])> {
        let qos = (self.flags >> 1) & 3;
        let body = self.body;
        let topic_len = u16::from_be_bytes(body.get(..2)?.try_into().ok()?) as usize;
        let topic = body.get(2..2 + topic_len)?;
        let mut rest = &body[2 + topic_len..];
        let mut id = 0;
        if qos > 0 {
            id = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
            rest = &rest[2..];
        }
        Some((topic, id, qos, rest))
    }

    /// The packet id of a PUBACK or SUBACK.
    pub fn packet_id(&self) -> u16 {
        u16::from_be_bytes([self.body[0], self.body[1]])
    }
}

/// The first whole packet in `buf` and its length, `Ok(None)` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let mut len = 0usize;
    let mut shift = 0;
    let mut at = 1;
    loop {
        let Some(&byte) = buf.get(at) else {
            return Ok(None);
        };
        len |= ((byte & 0x7F) as usize) << shift;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err("malformed remaining length");
        }
    }
    if buf.len() < at + len {
        return Ok(None);
    }
    Ok(Some((
        Packet {
            kind: buf[0] >> 4,
            flags: buf[0] & 0x0F,
            body: &buf[at..at + len],
        },
        at + len,
    )))
}

/// Checked when the bench binary runs as a test (`cargo test --all-targets`).
pub fn self_check() {
    {
        let mut buf = Vec::new();
        publish(&mut buf, "/users/1/messages", &vec![b'x'; 300], 1, 77);
        puback(&mut buf, 5);
        let (packet, used) = parse(&buf).unwrap().unwrap();
        assert_eq!(packet.kind, PUBLISH);
        let (topic, id, qos, payload) = packet.publish().unwrap();
        assert_eq!(
            (topic, id, qos, payload.len()),
            (&b"/users/1/messages"[..], 77, 1, 300)
        );
        let (ack, _) = parse(&buf[used..]).unwrap().unwrap();
        assert_eq!((ack.kind, ack.packet_id()), (PUBACK, 5));
        assert!(parse(&buf[..used - 1]).unwrap().is_none());
    }
}
