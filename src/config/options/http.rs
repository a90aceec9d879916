//! The HTTP backend (auth-plug's `http_*`, and go-auth's names).

use super::*;

pub(super) const HTTP: &[Spec] = &[
    spec(
        "http_ip",
        Text,
        Http,
        "The HTTP auth service's address or host name.",
    )
    .doc("**required** with `http`"),
    spec(
        "http_host",
        Text,
        Http,
        "go-auth's name for `http_ip` (fields then go as JSON).",
    ),
    spec(
        "http_port",
        Whole {
            min: 1,
            max: 65_535,
        },
        Http,
        "Its port.",
    )
    .doc("`80` (`443` with TLS)"),
    spec(
        "http_hostname",
        Text,
        Http,
        "The `Host` header to send, when it is not the address connected to (a virtual host).",
    ),
    spec(
        "http_with_tls",
        Flag,
        Http,
        "`https`: the service's certificate and host name are verified against Mozilla's root \
         certificates (built in, webpki-roots).",
    )
    .default("false"),
    spec(
        "http_verify_peer",
        Flag,
        Http,
        "`false` skips that verification (go-auth's option; only for a test service).",
    )
    .default("true"),
    spec(
        "http_getuser_uri",
        Text,
        Http,
        "Path logins are asked at (`acc` -1).",
    )
    .doc("**required** with `http`"),
    spec(
        "http_superuser_uri",
        Text,
        Http,
        "Path superusers are asked at (`acc` -1); none: the service makes no superusers.",
    ),
    spec(
        "http_aclcheck_uri",
        Text,
        Http,
        "Path ACL checks are asked at (`acc` 1 read, 2 write, 4 subscribe).",
    )
    .doc("**required** with `http`"),
    spec(
        "http_getuser_params",
        Text,
        Http,
        "Extra login fields, `key=value,key2=value2`, sent after auth-plug's, escaped like them.",
    ),
    spec(
        "http_superuser_params",
        Text,
        Http,
        "The same for superuser questions.",
    ),
    spec(
        "http_aclcheck_params",
        Text,
        Http,
        "The same for ACL checks.",
    ),
    spec(
        "http_timeout",
        Whole { min: 1, max: 60 },
        Http,
        "Seconds one request may take in all, connecting included.",
    )
    .default("2"),
    spec(
        "http_params_mode",
        Choice(&["form", "json"]),
        Http,
        "`form` (auth-plug, `application/x-www-form-urlencoded`) or `json` (go-auth).",
    )
    .doc("`form` (`json` with go-auth's names)"),
    spec(
        "http_response_mode",
        Choice(&["status", "json", "text"]),
        Http,
        "`status` (2xx allows), `json` (200 with `{\"ok\": true}`) or `text` (200 with `ok`), \
         as go-auth. A 5xx is an error in every mode.",
    )
    .default("status"),
];
