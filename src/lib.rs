//! chat-auth: a Mosquitto 2.0 plugin. The safe core (config, query, hash, auth, acl, topic,
//! sessions, control, db, refresh, store) never calls the broker; `ffi` is the only place
//! with `unsafe`: the broker calls, and the spool's memory-mapped segment file.

pub mod acl;
pub mod auth;
pub mod chat;
pub mod config;
pub mod control;
pub mod db;
pub mod hash;
pub mod logging;
pub mod plugin;
pub mod query;
pub mod refresh;
pub mod sessions;
pub mod store;
pub mod topic;

mod ffi;
