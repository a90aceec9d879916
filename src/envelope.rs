//! The `$CONTROL` message format Mosquitto's own APIs use, shared by the administrative
//! commands (`control`) and chat history (`history`): a list of commands in, one
//! `{"responses":[...]}` answer per command out, to the client that asked.

use crate::action::{Action, Reply};
use serde::Serialize;
use serde_json::Value;

/// The commands of a control message, `{"commands":[...]}` or a single `{"command":...}`,
/// each with the reply it gets (`base` with the command's name and `correlationData`).
/// `Err` when the message is not a command list at all, or holds more than `max`.
pub fn commands(payload: &[u8], base: &Reply, max: usize) -> Result<Vec<(Value, Reply)>, String> {
    let message: Value =
        serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    let commands: Vec<Value> = match message {
        Value::Object(mut object) => match object.remove("commands") {
            Some(Value::Array(list)) => list,
            Some(_) => return Err("\"commands\" must be an array".into()),
            None if object.contains_key("command") => vec![Value::Object(object)],
            None => return Err("expected {\"commands\":[...]}".into()),
        },
        _ => return Err("expected {\"commands\":[...]}".into()),
    };
    if commands.len() > max {
        return Err(format!("at most {max} commands per message"));
    }
    Ok(commands
        .into_iter()
        .map(|body| {
            let mut reply = base.clone();
            reply.command = body
                .get("command")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            reply.correlation = body.get("correlationData").cloned();
            (body, reply)
        })
        .collect())
}

/// The answer to one command, to the client that asked.
pub fn answer(reply: &Reply, outcome: Result<Option<Value>, String>) -> Action {
    answer_with(reply, outcome)
}

/// The same with any data (a history page, raw JSON).
pub fn answer_with<T: Serialize>(reply: &Reply, outcome: Result<Option<T>, String>) -> Action {
    Action::Publish {
        client_id: reply.client_id.clone(),
        topic: reply.topic.clone(),
        payload: response(reply, outcome),
        correlation_data: reply.correlation_data.clone(),
    }
}

/// The answer to one command: `Ok(data)` or `Err(error)`.
pub fn response<T: Serialize>(reply: &Reply, outcome: Result<Option<T>, String>) -> Vec<u8> {
    let (data, error) = match outcome {
        Ok(data) => (data, None),
        Err(error) => (None, Some(error)),
    };
    let item = Response {
        command: &reply.command,
        correlation: reply.correlation.as_ref(),
        data,
        error,
    };
    serde_json::to_vec(&Responses { responses: [item] }).unwrap_or_default()
}

#[derive(Serialize)]
struct Responses<'a, T: Serialize> {
    responses: [Response<'a, T>; 1],
}

/// One answer: `data` (verbatim, also when it holds raw JSON) or `error`.
#[derive(Serialize)]
struct Response<'a, T: Serialize> {
    command: &'a str,
    #[serde(rename = "correlationData", skip_serializing_if = "Option::is_none")]
    correlation: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}
