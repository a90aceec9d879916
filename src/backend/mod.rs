//! The backends, each in its own file behind one interface, as mosquitto-go-auth has them:
//! [`crate::auth::UserSource`] answers who a user is and whether they are a superuser; the
//! rules come from MySQL as sets loaded per user (`mysql::MysqlRules`), from the HTTP
//! service as one answer per client, topic and access (`http::HttpBackend::acl`).
//! `auth_opt_backends` lists them in the order they are asked.

pub mod http;
pub mod mysql;
