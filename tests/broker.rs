//! Tests against a real `mosquitto` running the built plugin, a private MariaDB and real
//! MQTT clients. Own `main` (libtest-mimic) so the shared MariaDB is stopped at the end,
//! pass or fail.

#[path = "broker/auth.rs"]
mod auth;
#[path = "broker/harness.rs"]
mod harness;

use libtest_mimic::{Arguments, Trial};

fn main() {
    let args = Arguments::from_args();
    let trials: Vec<Trial> = auth::trials();
    harness::start_shared();
    let conclusion = libtest_mimic::run(&args, trials);
    harness::stop_shared();
    conclusion.exit();
}
