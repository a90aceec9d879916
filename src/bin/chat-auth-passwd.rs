//! Prints a password hash for the users table, like auth-plug's `np`, or checks one.
//!
//!   chat-auth-passwd [--format F] [--algorithm A] [--iterations N] [--cost N] [PASSWORD]
//!   chat-auth-passwd --check STORED_HASH [PASSWORD]
//!
//! Without PASSWORD, the first line of standard input is read (keeps it out of `ps`).

use chat_auth::hash::{self, HashSettings, PbkdfAlgorithm};
use std::io::BufRead;
use std::process::ExitCode;

const USAGE: &str = "usage: chat-auth-passwd [--format pbkdf2|mosquitto|django|bcrypt|argon2id] \
[--algorithm sha1|sha256|sha512] [--iterations N] [--cost N] [PASSWORD]
       chat-auth-passwd --check STORED_HASH [PASSWORD]
Prints a hash for the users table. Default: PBKDF2$sha512$20000$... (auth-plug's format),
about 14 ms per login on one core; see docs/passwords.md for stronger settings and their cost.
Without PASSWORD the first line of standard input is used.";

/// Defaults sized for a broker that checks every first login on its one thread: about
/// 15 ms each (docs/passwords.md, "Cost on the broker thread", has the measured logins per
/// second).
const DEFAULT_SHA512_ITERATIONS: u32 = 20_000;
const DEFAULT_DJANGO_ITERATIONS: u32 = 100_000;
const DEFAULT_BCRYPT_COST: u32 = 10;

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("chat-auth-passwd: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<String, String> {
    let mut format = "pbkdf2".to_string();
    let mut algorithm = PbkdfAlgorithm::Sha512;
    let mut iterations: Option<u32> = None;
    let mut cost = DEFAULT_BCRYPT_COST;
    let mut check: Option<String> = None;
    let mut password: Option<String> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Err("help".into()),
            "--format" => format = value("--format")?,
            "--algorithm" => {
                let name = value("--algorithm")?;
                algorithm = PbkdfAlgorithm::from_name(&name)
                    .ok_or(format!("unknown algorithm '{name}'"))?;
            }
            "--iterations" => {
                let n = value("--iterations")?;
                iterations = Some(
                    n.parse()
                        .ok()
                        .filter(|n| (1..=hash::MAX_PBKDF2_ITERATIONS).contains(n))
                        .ok_or(format!(
                            "--iterations '{n}' is not 1 to {}",
                            hash::MAX_PBKDF2_ITERATIONS
                        ))?,
                );
            }
            "--cost" => {
                let n = value("--cost")?;
                cost = n
                    .parse()
                    .ok()
                    .filter(|c| (4..=hash::MAX_BCRYPT_COST).contains(c))
                    .ok_or(format!(
                        "--cost '{n}' is not 4 to {}",
                        hash::MAX_BCRYPT_COST
                    ))?;
            }
            "--check" => check = Some(value("--check")?),
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            other if password.is_none() => password = Some(other.to_string()),
            _ => return Err("more than one password given".into()),
        }
    }
    let password = match password {
        Some(p) => p,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password: {e}"))?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if password.is_empty() {
        return Err("the password is empty (MQTT passes an empty password as none)".into());
    }
    let pw = password.as_bytes();
    let affordable = |algorithm: PbkdfAlgorithm, iterations: u32| {
        // The same cap the plugin applies to stored rows (the generated keys are one block).
        if algorithm.affordable(iterations, algorithm.block_len()) {
            Ok(iterations)
        } else {
            Err(format!(
                "--iterations {iterations} is more {} work than the plugin accepts (at most {} \
                 iterations); one login must not hold the broker for long",
                algorithm.name(),
                algorithm.max_work()
            ))
        }
    };
    if let Some(stored) = check {
        return match hash::verify(stored.as_bytes(), None, pw, &HashSettings::default()) {
            Ok(true) => Ok("match".into()),
            Ok(false) => Err("no match".into()),
            Err(e) => Err(e.to_string()),
        };
    }
    match format.as_str() {
        "pbkdf2" => Ok(hash::generate_auth_plug(
            pw,
            algorithm,
            affordable(algorithm, iterations.unwrap_or(DEFAULT_SHA512_ITERATIONS))?,
        )),
        "mosquitto" => Ok(hash::generate_mosquitto(
            pw,
            affordable(
                PbkdfAlgorithm::Sha512,
                iterations.unwrap_or(DEFAULT_SHA512_ITERATIONS),
            )?,
        )),
        "django" => Ok(hash::generate_django(
            pw,
            affordable(
                PbkdfAlgorithm::Sha256,
                iterations.unwrap_or(DEFAULT_DJANGO_ITERATIONS),
            )?,
        )),
        "bcrypt" => hash::generate_bcrypt(pw, cost),
        "argon2id" | "argon2" => hash::generate_argon2id(pw),
        other => Err(format!("unknown format '{other}'")),
    }
}
