//! Per-user limits: the chat rate, connections per user.

use super::*;

pub(super) const LIMITS: &[Spec] = &[
    spec(
        "chat_rate",
        Whole {
            min: 0,
            max: 10_000,
        },
        General,
        "Chat messages per second one user may send, all of the user's connections to this \
         broker together (a token bucket refilled at this rate; `0`: no limit). Over it a \
         chat message is refused (MQTT 5: `0x97` on Mosquitto 2.1, `0x87` on 2.0), neither \
         delivered nor stored. Superusers and bridge accounts are not limited. The default is \
         five times what the fastest typist sends (see Limits).",
    )
    .default("5"),
    spec(
        "chat_burst",
        Whole {
            min: 1,
            max: 100_000,
        },
        General,
        "Chat messages a user who was quiet may send at once (the bucket's size): a phone \
         sending what it queued offline, a quick run of short replies.",
    )
    .default("20"),
    spec(
        "chat_group_weight",
        Whole { min: 1, max: 1_000 },
        General,
        "Tokens a group message takes from the sender's bucket (an inbox message takes one): \
         a group message reaches every member. At most `chat_burst`.",
    )
    .default("2"),
    spec(
        "max_connections_per_user",
        Whole {
            min: 0,
            max: 100_000,
        },
        General,
        "Connections one user may hold to this broker at once (`0`: no limit). A take-over of \
         a client id the user holds does not count twice. Superusers and bridge accounts are \
         not limited. See `connection_limit_policy`.",
    )
    .default("0"),
    spec(
        "connection_limit_policy",
        Choice(&["refuse", "oldest"]),
        General,
        "What a login beyond `max_connections_per_user` gets: `refuse` refuses it (CONNACK \
         not authorised; the log says why), `oldest` lets it in and disconnects the user's \
         oldest connection.",
    )
    .default("refuse"),
];
