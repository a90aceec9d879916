//! The Debian package (issue 14): installed on this machine, the system `mosquitto` running
//! as the `mosquitto` user loads the packaged plugin, a user logs in and a chat message is
//! stored; removing the package keeps the spool folder; the conffile (where the MySQL
//! password goes) is 0640 root:mosquitto. `scripts/test` builds the package
//! (`scripts/package`) and names it in `CHAT_AUTH_DEB`.

use crate::acl::{PASSWORD, USERQUERY, chat_db};
use crate::harness::{Broker, eventually, free_port, shared};
use crate::mqtt::{Mqtt, accepted};
use libtest_mimic::Trial;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    let tests: &[(&str, fn())] = &[(
        "package::the_installed_package_logs_in_and_stores",
        the_installed_package_logs_in_and_stores,
    )];
    crate::trials(tests)
}

const SPOOL: &str = "/var/lib/mosquitto/chat-auth";

fn dpkg(args: &[&str]) -> std::process::Output {
    Command::new("dpkg")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run dpkg {args:?}: {e}"))
}

/// Why this machine cannot take the test, if it cannot (said, never silently skipped).
fn cannot_install() -> Option<String> {
    let Some(deb) = std::env::var_os("CHAT_AUTH_DEB") else {
        return Some("CHAT_AUTH_DEB names no package (scripts/test builds one)".into());
    };
    if !Path::new(&deb).is_file() {
        return Some(format!(
            "CHAT_AUTH_DEB: no file {}",
            Path::new(&deb).display()
        ));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("installing a package needs root".into());
    }
    let status = dpkg(&["-s", "chat-auth"]);
    if String::from_utf8_lossy(&status.stdout).contains("Status: install ok installed") {
        return Some("chat-auth is installed on this machine; the test does not replace it".into());
    }
    None
}

fn the_installed_package_logs_in_and_stores() {
    if let Some(why) = cannot_install() {
        println!("skipped: {why}");
        eprintln!("package test SKIPPED: {why}");
        return;
    }
    let deb = std::env::var("CHAT_AUTH_DEB").unwrap();
    let spool_existed = Path::new(SPOOL).exists();
    let _installed_here = Uninstall { spool_existed };
    let installed = dpkg(&["-i", &deb]);
    assert!(
        installed.status.success(),
        "dpkg -i: {}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let files = String::from_utf8_lossy(&dpkg(&["-L", "chat-auth"]).stdout).to_string();
    let plugin = files
        .lines()
        .find(|f| f.ends_with("/mosquitto/mosquitto_chat_auth.so"))
        .unwrap_or_else(|| panic!("no plugin among the package's files:\n{files}"))
        .to_string();
    for path in [
        "/usr/bin/chat-auth-passwd",
        "/usr/share/chat-auth/schema.sql",
        "/usr/share/chat-auth/history-upgrade.sql",
        "/etc/mosquitto/conf.d/chat-auth.conf",
        "/usr/share/doc/chat-auth/examples/chat.conf",
        "/usr/share/doc/chat-auth/examples/auth-plug.conf",
        "/usr/share/doc/chat-auth/copyright",
        "/usr/share/doc/chat-auth/README.md",
        "/usr/share/doc/chat-auth/docs/README.md",
        "/usr/share/doc/chat-auth/docs/options.md",
    ] {
        assert!(Path::new(path).exists(), "{path} installed");
    }
    // The MySQL password goes there: readable by root and the broker's group only.
    let owned = Command::new("stat")
        .args(["-c", "%a %U %G", "/etc/mosquitto/conf.d/chat-auth.conf"])
        .output()
        .expect("run stat");
    assert_eq!(
        String::from_utf8_lossy(&owned.stdout).trim(),
        "640 root mosquitto",
        "the conffile's mode, owner and group"
    );
    let conffile = std::fs::read_to_string("/etc/mosquitto/conf.d/chat-auth.conf").unwrap();
    assert!(
        conffile.lines().all(|l| l.is_empty() || l.starts_with('#')),
        "every line of the conffile is commented out:\n{conffile}"
    );
    // The files its comments point at (the option reference, the schema, the manual) are
    // installed.
    let named: Vec<&str> = conffile
        .split(|c: char| c.is_whitespace() || ";,()\"".contains(c))
        .filter(|w| w.starts_with("/usr/share/"))
        .collect();
    assert!(
        !named.is_empty(),
        "the conffile names its reference:\n{conffile}"
    );
    for path in named {
        assert!(
            Path::new(path).is_file(),
            "{path}, named by the conffile, installed"
        );
    }

    let db = shared();
    let dbname = chat_db(db, "package");
    db.root_exec(&format!(
        "GRANT INSERT, UPDATE ON `{dbname}`.messages TO 'chatauth'@'%';
         GRANT INSERT, UPDATE ON `{dbname}`.messages TO 'chatauth'@'localhost'"
    ));
    let port = free_port();
    let conf = format!(
        "user mosquitto\nlog_type all\nper_listener_settings false\nallow_anonymous false\n\
         listener {port} 127.0.0.1\nplugin {plugin}\n{}{USERQUERY}\
         auth_opt_persist_enabled true\nauth_opt_persist_spool_dir {SPOOL}\n",
        db.plugin_options(&dbname),
    );
    let broker = Broker::run(&conf, port).expect("the system broker starts with the package");
    let user = Command::new("ps")
        .args(["-o", "user=", "-p", &broker.pid().to_string()])
        .output()
        .expect("run ps");
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "mosquitto");
    let mut bob = Mqtt::connect(port, "package-bob", "bob", PASSWORD);
    let payload = json!({"type": "CHAT", "fromId": 2, "toId": 1, "content": "packaged"});
    assert!(accepted(bob.publish(
        "/users/1/messages",
        payload.to_string(),
        false
    )));
    eventually("the message stored", Duration::from_secs(10), || {
        db.root_column(&format!(
            "SELECT content FROM `{dbname}`.messages WHERE from_id = '2'"
        )) == ["packaged"]
    });
    drop(bob);
    drop(broker);

    let removed = dpkg(&["-r", "chat-auth"]);
    assert!(removed.status.success(), "dpkg -r");
    assert!(!Path::new(&plugin).exists(), "the plugin is removed");
    assert!(Path::new(SPOOL).is_dir(), "remove keeps the spool folder");
    let purged = dpkg(&["-P", "chat-auth"]);
    assert!(purged.status.success(), "dpkg -P");
    let said = String::from_utf8_lossy(&purged.stderr);
    if std::fs::read_dir(SPOOL).is_ok_and(|mut d| d.next().is_some()) {
        assert!(said.contains("left in place"), "purge says so: {said}");
    }
}

/// Leaves the machine as the test found it, pass or fail: the package purged, and the spool
/// folder removed if the test made it.
struct Uninstall {
    spool_existed: bool,
}

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = dpkg(&["-P", "chat-auth"]);
        if !self.spool_existed {
            let _ = std::fs::remove_dir_all(SPOOL);
        }
    }
}
