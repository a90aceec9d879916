//! Generates Rust declarations for the part of Mosquitto's broker API the plugin calls.
use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        // Only what the broker executable exports: client-library-only functions would
        // make dlopen fail with "undefined symbol".
        .allowlist_function("mosquitto_callback_register")
        .allowlist_function("mosquitto_callback_unregister")
        .allowlist_function("mosquitto_log_printf")
        .allowlist_function("mosquitto_client_id")
        .allowlist_function("mosquitto_client_username")
        .allowlist_function("mosquitto_client_address")
        .allowlist_function("mosquitto_client_certificate")
        .allowlist_function("mosquitto_client_clean_session")
        .allowlist_function("mosquitto_malloc")
        .allowlist_function("mosquitto_free")
        .allowlist_function("mosquitto_broker_publish")
        .allowlist_function("mosquitto_property_add_binary")
        .allowlist_function("mosquitto_property_free_all")
        .allowlist_type("mosquitto_property")
        .allowlist_type("mqtt5_property")
        .allowlist_function("mosquitto_kick_client_by_username")
        .allowlist_function("mosquitto_kick_client_by_clientid")
        .allowlist_type("mosquitto_evt_.*")
        .allowlist_type("mosquitto_opt")
        .allowlist_type("mosq_err_t")
        .allowlist_type("mosquitto_plugin_event")
        .allowlist_var("MOSQ_LOG_.*")
        .allowlist_var("MOSQ_ACL_.*")
        .prepend_enum_name(false)
        .generate()
        .expect("bindgen could not read wrapper.h: is mosquitto-dev installed? (scripts/setup)");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("writing bindings.rs");
}
