//! auth-plug's wire format: the fields of a question, its body, and what an answer means.

use super::*;

/// What the service said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Allow,
    Refuse,
    /// 5xx, a transport error or a timeout: neither allowed nor cached.
    Error(String),
}

/// The `acc` value auth-plug sends.
pub fn acc(access: Access) -> i32 {
    match access {
        Access::Read => 1,
        Access::Write => 2,
        Access::Subscribe => 4,
        // Never asked: unsubscribing is always allowed.
        Access::Unsubscribe => 8,
    }
}

/// The fields of one request, in auth-plug's order, with the operator's extra parameters
/// (`http_*_params`) after them.
pub fn fields<'a>(
    username: &'a str,
    password: &'a str,
    topic: &'a str,
    acc: i32,
    client_id: &'a str,
    extra: &'a [(String, String)],
) -> Vec<(&'a str, FieldValue<'a>)> {
    let mut fields = vec![
        ("username", FieldValue::Text(username)),
        ("password", FieldValue::Text(password)),
        ("topic", FieldValue::Text(topic)),
        ("acc", FieldValue::Number(acc)),
        ("clientid", FieldValue::Text(client_id)),
    ];
    fields.extend(
        extra
            .iter()
            .map(|(k, v)| (k.as_str(), FieldValue::Text(v.as_str()))),
    );
    fields
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    Text(&'a str),
    Number(i32),
}

/// The request body and its content type. Form values are percent-encoded (every value,
/// the client id too); JSON is serde_json's.
pub fn body(mode: ParamsMode, fields: &[(&str, FieldValue<'_>)]) -> (&'static str, String) {
    match mode {
        ParamsMode::Form => {
            let pairs = fields.iter().map(|(k, v)| {
                let value = match v {
                    FieldValue::Text(t) => (*t).to_string(),
                    FieldValue::Number(n) => n.to_string(),
                };
                format!("{}={}", form_escape(k), form_escape(&value))
            });
            (
                "application/x-www-form-urlencoded",
                pairs.collect::<Vec<_>>().join("&"),
            )
        }
        ParamsMode::Json => {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        FieldValue::Text(t) => serde_json::Value::from(*t),
                        FieldValue::Number(n) => serde_json::Value::from(*n),
                    };
                    (k.to_string(), value)
                })
                .collect();
            (
                "application/json",
                serde_json::Value::Object(object).to_string(),
            )
        }
    }
}

/// `application/x-www-form-urlencoded`: unreserved bytes as they are, space as `+`, the
/// rest `%XX`.
pub(super) fn form_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The verdict on one answer. `status` mode (auth-plug): 2xx allows, 5xx is an error, the
/// rest refuses. `json` (go-auth): 200 with `{"ok": true}` allows. `text` (go-auth): 200 with
/// the body `ok` allows. In both, a 5xx is an error and anything else refuses.
pub fn verdict(mode: ResponseMode, status: u16, body: &str) -> Answer {
    if status >= 500 {
        return Answer::Error(format!("the service answered {status}"));
    }
    let allowed = match mode {
        ResponseMode::Status => (200..300).contains(&status),
        ResponseMode::Json => {
            status == 200
                && serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("ok").and_then(serde_json::Value::as_bool))
                    == Some(true)
        }
        ResponseMode::Text => status == 200 && body.trim() == "ok",
    };
    if allowed {
        Answer::Allow
    } else {
        Answer::Refuse
    }
}
