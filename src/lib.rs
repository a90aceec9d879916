//! chat-auth: a Mosquitto 2.0 plugin. The safe core (config, query, hash, auth, acl, topic,
//! sessions, control, db, refresh, store) never calls the broker and never imports `ffi`;
//! `ffi` (the broker calls) and `store::mapped_file` (the spool's memory-mapped segment
//! file) are the only places with `unsafe`. The compiler holds this: `unsafe` is an error
//! everywhere else, and every `unsafe` block there says why it is sound.

#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod acl;
pub mod action;
pub mod auth;
pub mod backend;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod control;
pub mod db;
pub mod dedup;
pub mod delayed;
pub mod envelope;
pub mod exporter;
pub mod figures;
pub mod hash;
pub mod history;
pub mod intake;
pub mod logging;
pub mod message_id;
pub mod metrics;
pub mod names;
pub mod plugin;
pub mod query;
pub mod refresh;
pub mod resend;
pub mod session_file;
pub mod sessions;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod topic;

#[allow(unsafe_code)]
mod ffi;
