//! Time to verify one password per stored format (a first login's hash time on the broker
//! thread). Every vector was made by the format's real producer (see `src/hash` tests).
//!
//! `cargo bench --bench hash`

use chat_auth::hash::{HashSettings, verify};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

const VECTORS: &[(&str, &str)] = &[
    // auth-plug np formula (python hashlib), auth-plug's default 901 iterations.
    (
        "PBKDF2$sha256$901 (auth-plug)",
        "PBKDF2$sha256$901$XJWTUtSDSMKtwqkZ$4BFBbpRRlpzGyoiwYxTJjn2Vq6vbm1ky",
    ),
    // mosquitto_passwd -b FILE alice secret (Mosquitto 2.0.11)
    (
        "mosquitto_passwd $7$ (101)",
        "$7$101$1KWdkiAgMyqFgpuQ$kiLqujMSISYq/30yV4cqdVtFMcdeQdvDPk2iJc+875JmT+ro4MTRFVUamzV6n1oKKsovQv4OdheAQKAmxXgZbg==",
    ),
    // mosquitto_passwd -H sha512 -b FILE bob secret (Mosquitto 2.0.11)
    (
        "mosquitto_passwd $6$",
        "$6$dIpNXrbC4DCbQn23$oNAvmXgXuWfqhz8eH28CFVCYu6HOL6F/t+OGgYhteYBZ3hOuHkl9jA90HFhrhiM4nMxYveGja4INzlJ+4pytbw==",
    ),
    // MariaDB: SELECT PASSWORD('secret'), OLD_PASSWORD('secret'), MD5('secret'), SHA2('secret', 256)
    (
        "MySQL PASSWORD()",
        "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7",
    ),
    ("MySQL OLD_PASSWORD()", "428567f408994404"),
    ("MD5() hex", "5ebe2294ecd0e0f08eab7690d2a6ee69"),
    (
        "SHA2(,256) hex",
        "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
    ),
];

const SLOW_VECTORS: &[(&str, &str, &[u8])] = &[
    // PHP manual: password_hash("rasmuslerdorf", PASSWORD_DEFAULT) (cost 10)
    (
        "bcrypt cost 10",
        "$2y$10$.vGA1O9wmRjrwAVXD98HNOgsNpDczlqm3Jq7KnEd1rVAGv3Fykk1a",
        b"rasmuslerdorf",
    ),
    // argon2-cffi (Debian python3-argon2), m=1024 t=2 p=1
    (
        "argon2id m=1024,t=2",
        "$argon2id$v=19$m=1024,t=2,p=1$Yg9nl6NLaWZeJm6mD/4EwA$HjD2XdriDtJBL5NzP/rI9w",
        b"secret",
    ),
    // Django's formula (python hashlib), 260,000 iterations.
    (
        "Django pbkdf2_sha256 260000",
        "pbkdf2_sha256$260000$seasalt$YlZ2Vggtqdc61YjArZuoApoBh9JNGYoDRBUGu6tcJQo=",
        "lètmein".as_bytes(),
    ),
];

fn password_verification(c: &mut Criterion) {
    let settings = HashSettings::default();
    let mut group = c.benchmark_group("verify");
    for (name, stored) in VECTORS {
        assert_eq!(
            verify(stored.as_bytes(), None, b"secret", &settings),
            Ok(true),
            "{name}"
        );
        group.bench_function(*name, |b| {
            b.iter(|| verify(black_box(stored.as_bytes()), None, b"secret", &settings))
        });
    }
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for (name, stored, password) in SLOW_VECTORS {
        assert_eq!(
            verify(stored.as_bytes(), None, password, &settings),
            Ok(true),
            "{name}"
        );
        group.bench_function(*name, |b| {
            b.iter(|| verify(black_box(stored.as_bytes()), None, password, &settings))
        });
    }
    group.finish();
}

criterion_group!(benches, password_verification);
criterion_main!(benches);
