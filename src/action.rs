//! The broker calls the plugin's parts ask for, made by the FFI edge on the broker's thread
//! (at TICK): publishing, kicking.

/// A broker call to make from the main thread (at TICK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// To one client, whether it subscribed or not (the broker checks no ACL for it).
    Publish {
        client_id: String,
        topic: String,
        payload: Vec<u8>,
        /// MQTT 5 correlation data to send with it (the request's).
        correlation_data: Option<Vec<u8>>,
    },
    KickUser(String),
    /// Disconnects the client with this id (its login no longer holds).
    KickClient(Vec<u8>),
    /// A retained message for every subscriber (the `$SYS` figures).
    Retain {
        topic: String,
        payload: Vec<u8>,
    },
    /// Completes a login the broker holds for the plugin (Mosquitto 2.1's delayed logins):
    /// let in, or refused.
    CompleteLogin {
        client_id: Vec<u8>,
        accepted: bool,
    },
    /// A QoS 1 message for every subscriber, the bridges included (cluster commands).
    Broadcast {
        topic: String,
        payload: Vec<u8>,
    },
}

/// Where and how to answer one command (kept by a rules load a `refreshUser` started, so
/// the answer goes out when it is applied).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub client_id: String,
    /// Where the answer goes: the API's response topic, or the request's MQTT 5 response
    /// topic.
    pub topic: String,
    pub command: String,
    /// The command's `correlationData` member, echoed.
    pub correlation: Option<serde_json::Value>,
    /// The request's MQTT 5 correlation data, sent back as a property.
    pub correlation_data: Option<Vec<u8>>,
}

impl Reply {
    /// A reply to `client_id` on `topic`, for a command not yet named.
    pub fn to(client_id: &str, topic: &str) -> Reply {
        Reply {
            client_id: client_id.to_string(),
            topic: topic.to_string(),
            command: String::new(),
            correlation: None,
            correlation_data: None,
        }
    }
}

/// Wakes the broker's event loop from another thread, so a result a background thread
/// made is handed over at the next TICK at once rather than when the loop's 100 ms wait ends
/// (the FFI edge makes it; without one, results wait for the next TICK).
pub type Waker = std::sync::Arc<dyn Fn() + Send + Sync>;

/// Runs a piece of broker-thread work that waits on the network with the loop waker's signal
/// held back (Mosquitto 2.1, where the signal is not blocked on the broker thread; see the
/// FFI edge's waker). `None` where nothing needs holding back.
pub type Hush = std::sync::Arc<dyn Fn(&mut dyn FnMut()) + Send + Sync>;
