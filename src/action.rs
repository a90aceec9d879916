//! The broker calls the plugin's parts ask for, made by the FFI edge on the broker's thread
//! (at TICK): publishing, kicking.

/// A broker call to make from the main thread (at TICK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Publish {
        client_id: String,
        topic: String,
        payload: Vec<u8>,
    },
    KickUser(String),
    /// Disconnects the client with this id (its login no longer holds).
    KickClient(Vec<u8>),
    /// A retained message for every subscriber (the `$SYS` figures).
    Retain {
        topic: String,
        payload: Vec<u8>,
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
    pub command: String,
    pub correlation: Option<serde_json::Value>,
}
