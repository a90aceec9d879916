//! The HTTP backend's options (auth-plug's `http_*`, and go-auth's names and meanings).

use super::given::Given;
use super::{ConfigError, err};
use crate::backend::http::{HttpConfig, ParamsMode, ResponseMode};
use std::time::Duration;

pub(super) fn http_config<'a>(
    given: &Given<'a>,
    go_auth: bool,
    acl_cache: Duration,
) -> Result<HttpConfig, ConfigError> {
    let tls = given.flag("http_with_tls")?;
    // auth-plug's http_ip, or go-auth's http_host.
    let (host_option, host) = match (given.get("http_ip"), given.get("http_host")) {
        (Some(ip), _) => ("http_ip", ip),
        (None, Some(host)) => ("http_host", host),
        (None, None) => {
            return Err(err(
                "http_ip",
                "is required with auth_opt_backends http (the service's address; \
                 mosquitto-go-auth's auth_opt_http_host works too)",
            ));
        }
    };
    if host.contains(['/', '?', '#', '@', ' ']) {
        return Err(err(
            host_option,
            format!("'{host}' is not a host name or address"),
        ));
    }
    let port = given
        .whole_given::<u16>("http_port")?
        .unwrap_or(if tls { 443 } else { 80 });
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let uri = |name: &str| -> Result<Option<String>, ConfigError> {
        given
            .get(name)
            .map(|uri| {
                if uri.starts_with('/') && !uri.contains([' ', '#']) {
                    Ok(uri.to_string())
                } else {
                    Err(err(name, format!("'{uri}' is not a path starting with /")))
                }
            })
            .transpose()
    };
    let getuser_uri = uri("http_getuser_uri")?.ok_or_else(|| {
        err(
            "http_getuser_uri",
            "is required with auth_opt_backends http (the path logins are asked at)",
        )
    })?;
    let aclcheck_uri = uri("http_aclcheck_uri")?;
    if aclcheck_uri.is_none() {
        return Err(err(
            "http_aclcheck_uri",
            "is required with auth_opt_backends http (the path ACL checks are asked at; \
             without it the service's users could do nothing)",
        ));
    }
    let params = |name: &str| -> Result<Vec<(String, String)>, ConfigError> {
        given.get(name).map_or(Ok(Vec::new()), |list| {
            list.split(',')
                .map(|pair| match pair.split_once('=') {
                    Some((key, value)) if !key.trim().is_empty() => {
                        Ok((key.trim().to_string(), value.trim().to_string()))
                    }
                    _ => Err(err(
                        name,
                        format!("'{pair}' is not key=value (a list like domain=x,port=1)"),
                    )),
                })
                .collect()
        })
    };
    let params_mode = match given.choice("http_params_mode")? {
        Some("form") => ParamsMode::Form,
        Some(_) => ParamsMode::Json,
        // go-auth sends JSON unless told otherwise; auth-plug sends a form.
        None if go_auth || given.get("http_host").is_some() => ParamsMode::Json,
        None => ParamsMode::Form,
    };
    let response_mode = match given.choice("http_response_mode")? {
        Some("json") => ResponseMode::Json,
        Some("text") => ResponseMode::Text,
        _ => ResponseMode::Status,
    };
    Ok(HttpConfig {
        base_url: format!("{}://{host}:{port}", if tls { "https" } else { "http" }),
        host_header: given.get("http_hostname").map(str::to_string),
        getuser_uri,
        superuser_uri: uri("http_superuser_uri")?,
        aclcheck_uri,
        getuser_params: params("http_getuser_params")?,
        superuser_params: params("http_superuser_params")?,
        aclcheck_params: params("http_aclcheck_params")?,
        timeout: Duration::from_secs(given.whole::<u64>("http_timeout")?),
        params_mode,
        response_mode,
        verify_peer: given.flag("http_verify_peer")?,
        acl_cache,
    })
}
