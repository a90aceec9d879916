//! A small blocking MQTT 5 test client over rumqttc: subscribe and publish return the
//! broker's reason codes (SUBACK, PUBACK), received messages queue up for inspection.

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Packet, PubAckReason, PublishProperties, SubscribeReasonCode,
};
use rumqttc::v5::{Client, Event, MqttOptions};
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How long an acknowledgement may take before a test fails.
const ACK_WAIT: Duration = Duration::from_secs(10);

pub struct Mqtt {
    pub client_id: String,
    client: Client,
    events: Receiver<Result<Packet, String>>,
    /// Packets read while waiting for something else.
    backlog: VecDeque<Packet>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A received PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// The MQTT 5 correlation data it came with.
    pub correlation_data: Option<Vec<u8>>,
}

pub struct Login<'a> {
    pub client_id: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    /// `false` with a session expiry: a persistent session.
    pub clean_start: bool,
}

impl Mqtt {
    /// Connects with a clean session; `Err` carries the CONNACK reason or the failure.
    pub fn connect(port: u16, client_id: &str, username: &str, password: &str) -> Mqtt {
        Mqtt::login(
            port,
            Login {
                client_id,
                username,
                password,
                clean_start: true,
            },
        )
        .unwrap_or_else(|e| panic!("{username} could not connect: {e}"))
    }

    pub fn login(port: u16, login: Login<'_>) -> Result<Mqtt, String> {
        let mut options = MqttOptions::new(login.client_id, "127.0.0.1", port);
        options.set_credentials(login.username, login.password);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_start(login.clean_start);
        // Chat content may be 64 KiB and more once stamped.
        options.set_max_packet_size(Some(4 * 1024 * 1024));
        if !login.clean_start {
            options.set_session_expiry_interval(Some(3600));
        }
        let (client, mut connection) = Client::new(options, 100);
        let (sender, events) = channel();
        let thread = std::thread::spawn(move || {
            for event in connection.iter() {
                let item = match event {
                    Ok(Event::Incoming(packet)) => Ok(packet),
                    Ok(Event::Outgoing(_)) => continue,
                    Err(e) => Err(e.to_string()),
                };
                let stop = item.is_err();
                if sender.send(item).is_err() || stop {
                    return;
                }
            }
        });
        let mut mqtt = Mqtt {
            client_id: login.client_id.to_string(),
            client,
            events,
            backlog: VecDeque::new(),
            thread: Some(thread),
        };
        match mqtt.next_packet(ACK_WAIT)? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => Ok(mqtt),
            Packet::ConnAck(ack) => Err(format!("refused: {:?}", ack.code)),
            other => Err(format!("unexpected first packet {other:?}")),
        }
    }

    fn next_packet(&mut self, wait: Duration) -> Result<Packet, String> {
        match self.events.recv_timeout(wait) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err("timed out".into()),
            Err(RecvTimeoutError::Disconnected) => Err("connection closed".into()),
        }
    }

    /// Waits for the first packet `pick` accepts, keeping the others for later.
    fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Packet) -> Option<T>) -> T {
        let deadline = Instant::now() + ACK_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let packet = self
                .next_packet(left)
                .unwrap_or_else(|e| panic!("{}: no {what}: {e}", self.client_id));
            if let Some(found) = pick(&packet) {
                return found;
            }
            self.backlog.push_back(packet);
        }
    }

    /// SUBSCRIBE at QoS 1; the SUBACK's reason code (1 = granted QoS 1, 0x87 = not authorized).
    pub fn subscribe(&mut self, filter: &str) -> u8 {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .expect("queue SUBSCRIBE");
        self.wait_for("SUBACK", |p| match p {
            Packet::SubAck(ack) => Some(suback_code(&ack.return_codes[0])),
            _ => None,
        })
    }

    /// PUBLISH at QoS 1; the PUBACK's reason code (0 or 0x10 = accepted, 0x87 = refused).
    pub fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) -> u8 {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.into())
            .expect("queue PUBLISH");
        self.wait_for("PUBACK", |p| match p {
            Packet::PubAck(ack) => Some(puback_code(&ack.reason)),
            _ => None,
        })
    }

    /// PUBLISH at QoS 1 with an MQTT 5 response topic and correlation data (a request, as
    /// `mosquitto_rr` sends it); the PUBACK's reason code.
    pub fn request(
        &mut self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        response_topic: &str,
        correlation_data: &[u8],
    ) -> u8 {
        let properties = PublishProperties {
            response_topic: Some(response_topic.to_string()),
            correlation_data: Some(correlation_data.to_vec().into()),
            ..Default::default()
        };
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload.into(), properties)
            .expect("queue PUBLISH");
        self.wait_for("PUBACK", |p| match p {
            Packet::PubAck(ack) => Some(puback_code(&ack.reason)),
            _ => None,
        })
    }

    /// The next message within `wait`, if any.
    pub fn message(&mut self, wait: Duration) -> Option<Message> {
        if let Some(i) = self
            .backlog
            .iter()
            .position(|p| matches!(p, Packet::Publish(_)))
        {
            return self.backlog.remove(i).and_then(|p| as_message(&p));
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_packet(left) {
                Ok(p @ Packet::Publish(_)) => return as_message(&p),
                Ok(other) => self.backlog.push_back(other),
                Err(_) => return None,
            }
        }
    }

    /// A message on `topic` within `wait`, skipping others.
    pub fn message_on(&mut self, topic: &str, wait: Duration) -> Option<Message> {
        let deadline = Instant::now() + wait;
        while let Some(m) = self.message(deadline.saturating_duration_since(Instant::now())) {
            if m.topic == topic {
                return Some(m);
            }
        }
        None
    }

    /// Everything received within `wait`.
    pub fn drain(&mut self, wait: Duration) -> Vec<Message> {
        let deadline = Instant::now() + wait;
        let mut all = Vec::new();
        while let Some(m) = self.message(deadline.saturating_duration_since(Instant::now())) {
            all.push(m);
        }
        all
    }

    /// Whether the broker closes this connection within `wait`.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            match self.next_packet(deadline.saturating_duration_since(Instant::now())) {
                Ok(packet) => self.backlog.push_back(packet),
                Err(e) => return e != "timed out",
            }
        }
    }

    pub fn disconnect(mut self) {
        let _ = self.client.disconnect();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}

fn as_message(packet: &Packet) -> Option<Message> {
    match packet {
        Packet::Publish(p) => Some(Message {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload.to_vec(),
            retain: p.retain,
            correlation_data: p
                .properties
                .as_ref()
                .and_then(|props| props.correlation_data.as_ref())
                .map(|data| data.to_vec()),
        }),
        _ => None,
    }
}

/// Wire values (rumqttc's enums are not).
fn suback_code(code: &SubscribeReasonCode) -> u8 {
    match code {
        SubscribeReasonCode::Success(qos) => *qos as u8,
        SubscribeReasonCode::Failure | SubscribeReasonCode::Unspecified => 0x80,
        SubscribeReasonCode::ImplementationSpecific => 0x83,
        SubscribeReasonCode::NotAuthorized => 0x87,
        SubscribeReasonCode::TopicFilterInvalid => 0x8F,
        SubscribeReasonCode::PkidInUse => 0x91,
        SubscribeReasonCode::QuotaExceeded => 0x97,
        SubscribeReasonCode::SharedSubscriptionsNotSupported => 0x9E,
        SubscribeReasonCode::SubscriptionIdNotSupported => 0xA1,
        SubscribeReasonCode::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

fn puback_code(reason: &PubAckReason) -> u8 {
    match reason {
        PubAckReason::Success => 0x00,
        PubAckReason::NoMatchingSubscribers => 0x10,
        PubAckReason::UnspecifiedError => 0x80,
        PubAckReason::ImplementationSpecificError => 0x83,
        PubAckReason::NotAuthorized => 0x87,
        PubAckReason::TopicNameInvalid => 0x90,
        PubAckReason::PacketIdentifierInUse => 0x91,
        PubAckReason::QuotaExceeded => 0x97,
        PubAckReason::PayloadFormatInvalid => 0x99,
    }
}

/// Whether a PUBACK code means the broker took the message.
pub fn accepted(code: u8) -> bool {
    code == 0x00 || code == 0x10
}
