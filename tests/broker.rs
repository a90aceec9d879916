//! Tests against a real `mosquitto` running the built plugin, a private MariaDB and real
//! MQTT clients. Own `main` (libtest-mimic) so the shared MariaDB is stopped at the end,
//! pass or fail.

#[path = "broker/acl.rs"]
mod acl;
#[path = "broker/auth.rs"]
mod auth;
#[path = "broker/cluster.rs"]
mod cluster;
#[path = "broker/delivery.rs"]
mod delivery;
#[path = "broker/fixtures.rs"]
mod fixtures;
#[path = "broker/harness.rs"]
mod harness;
#[path = "broker/history.rs"]
mod history;
#[path = "broker/http.rs"]
mod http;
#[path = "broker/identity.rs"]
mod identity;
#[path = "broker/limits.rs"]
mod limits;
#[path = "broker/mqtt.rs"]
mod mqtt;
#[path = "broker/package.rs"]
mod package;
#[path = "broker/postgres.rs"]
mod postgres;
#[path = "broker/security.rs"]
mod security;
#[path = "broker/stalls.rs"]
mod stalls;
#[path = "broker/store.rs"]
mod store;

use libtest_mimic::{Arguments, Trial};

/// One libtest-mimic trial per `(name, test)`; a test fails by panicking.
fn trials(tests: &[(&'static str, fn())]) -> Vec<Trial> {
    tests
        .iter()
        .map(|&(name, test)| {
            Trial::test(name, move || {
                test();
                Ok(())
            })
        })
        .collect()
}

fn main() {
    let args = Arguments::from_args();
    let mut trials: Vec<Trial> = auth::trials();
    trials.extend(acl::trials());
    trials.extend(store::trials());
    trials.extend(security::trials());
    trials.extend(stalls::trials());
    trials.extend(identity::trials());
    trials.extend(history::trials());
    trials.extend(http::trials());
    trials.extend(cluster::trials());
    trials.extend(delivery::trials());
    trials.extend(limits::trials());
    trials.extend(package::trials());
    trials.extend(postgres::trials());
    harness::start_shared();
    let conclusion = libtest_mimic::run(&args, trials);
    harness::stop_shared();
    if !conclusion.has_failed() {
        harness::remove_run_dir();
    }
    conclusion.exit();
}
