//! Deciding one login: the backends asked in order, the row's name and user id, the
//! password checked against the stored hash, superusers and bridge accounts; and the users a
//! TLS certificate let in.

use super::*;

impl<S: UserSource> Authenticator<S> {
    pub(super) fn decide(
        &self,
        username: &str,
        password: Option<&[u8]>,
        client_id: &[u8],
        now: Instant,
    ) -> Decision {
        let Some(password) = password else {
            return Decision::Refuse(Refusal::NoPassword);
        };
        let login_mac = self.secret.login_mac(username, password);
        if let Some(identity) = self
            .cache
            .as_ref()
            .and_then(|c| c.get(username, &login_mac, now))
        {
            // As decided at the login the cache remembers (the globs with the row's name).
            return Decision::Allow(identity);
        }
        let started = Instant::now();
        // The first backend that knows the user decides; one that fails decides too (a
        // backend that is down never lets the next one answer for its users).
        let mut found = None;
        for source in &self.sources {
            match source.lookup(username, password, client_id) {
                Ok(Lookup::Unknown) => continue,
                Ok(lookup) => {
                    found = Some((source.kind(), lookup));
                    break;
                }
                Err(e) => return Decision::Refuse(Refusal::Database(e)),
            }
        }
        let (backend, record) = match found {
            None | Some((_, Lookup::Unknown)) => return Decision::Refuse(Refusal::UnknownUser),
            Some((backend, Lookup::Accepted)) => {
                self.times
                    .add(backend.name(), Duration::ZERO, started.elapsed());
                let identity = Identity {
                    username: username.to_string(),
                    user_id: username.to_string(),
                    // The service answered for this very name.
                    superuser: self.is_superuser(username, false, true),
                    proof: None,
                    backend,
                    // Bridge accounts are rows of the user table, never the service's users.
                    relay: false,
                };
                if let Some(cache) = &self.cache {
                    cache.put(username, &login_mac, identity.clone(), now);
                }
                return Decision::Allow(identity);
            }
            Some((backend, Lookup::Row(record))) => (backend, record),
        };
        let fetched = Instant::now();
        if let Err(why) = Self::row_names(&record, username) {
            return Decision::Refuse(why);
        }
        let Some(stored) = record.hash.as_deref().filter(|h| !h.is_empty()) else {
            return Decision::Refuse(Refusal::NoStoredHash);
        };
        let verified = hash::verify(stored, record.salt.as_deref(), password, &self.hash);
        self.times.add(
            &format_label(stored, &self.hash),
            fetched.elapsed(),
            fetched - started,
        );
        match verified {
            Ok(true) => {}
            Ok(false) => return Decision::Refuse(Refusal::WrongPassword),
            Err(e) => return Decision::Refuse(Refusal::UnusableHash(e)),
        }
        let named = record.holds_name(username);
        let superuser = self.is_superuser(username, record.is_superuser, named);
        let mut proof = Proof {
            password: [0; 16],
            stored_hash: self.secret.hash_fingerprint(stored),
        };
        proof.password.copy_from_slice(&login_mac[..16]);
        let identity = Identity {
            username: username.to_string(),
            user_id: record.user_id.unwrap_or_else(|| username.to_string()),
            superuser,
            proof: Some(proof),
            backend,
            relay: self.is_relay(username, named),
        };
        if let Some(cache) = &self.cache {
            cache.put(username, &login_mac, identity.clone(), now);
        }
        Decision::Allow(identity)
    }

    /// A bridge account: `bridge_users` matches the name, and the row holds it as typed.
    pub(super) fn is_relay(&self, username: &str, named: bool) -> bool {
        self.glob_matches(self.bridge_users.as_ref(), "bridge_users", username, named)
    }

    /// Whether `glob` matches `username`, which a row proves was typed as stored (`named`).
    /// Without that proof (a `userquery` without a `username` column) no glob matches: on a
    /// case-insensitive table `Steve` finds `steve`'s row, and `S*` must not make him a
    /// superuser. Said once, so the operator adds the column.
    pub(super) fn glob_matches(
        &self,
        glob: Option<&glob::Pattern>,
        option: &str,
        username: &str,
        named: bool,
    ) -> bool {
        if !glob.is_some_and(|glob| glob.matches(username)) {
            return false;
        }
        if !named && !self.unproven_glob_said.swap(true, Ordering::Relaxed) {
            log::warn!(
                "user '{}' matches auth_opt_{option}, which is not applied: the user row does \
                 not show the name as stored (add a `username` column to auth_opt_userquery, \
                 e.g. SELECT password_hash, username FROM ...); a glob applies only to a name \
                 the row holds byte for byte",
                printable(username)
            );
        }
        named
    }

    /// The `is_superuser` column, the `superusers` glob (for a name the row holds, `named`),
    /// or `superquery`.
    pub(super) fn is_superuser(&self, username: &str, column: bool, named: bool) -> bool {
        column
            || self.glob_matches(self.superusers.as_ref(), "superusers", username, named)
            || self
                .sources
                .iter()
                .any(|source| match source.superquery(username) {
                    None => false,
                    Some(Ok(is)) => is,
                    Some(Err(e)) => {
                        // Fail closed: the login stands, the privilege does not.
                        log::warn!(
                            "superuser check ({}) for user '{}' failed ({e}); treated as not a \
                         superuser",
                            source.kind().name(),
                            printable(username)
                        );
                        false
                    }
                })
    }

    /// A row that names the user otherwise than typed, or gives no chat identity: refused.
    pub(super) fn row_names(record: &UserRecord, username: &str) -> Result<(), Refusal> {
        match &record.username {
            Some(stored) if stored != username => {
                return Err(Refusal::OtherSpelling(stored.clone()));
            }
            _ => {}
        }
        if record.user_id_null {
            return Err(Refusal::NullUserId);
        }
        Ok(())
    }

    /// Who a client is that the broker let in by its TLS certificate (the username from the
    /// certificate's identity or subject): the user's row without a password check
    /// (`UserSource::fetch_certificate_user`). No row: refused.
    /// Found users are remembered for `auth_cacheseconds` (not refusals: a row added or
    /// MySQL back is seen at the next connection).
    pub fn certificate_identity(&self, username: &str, now: Instant) -> Result<Identity, Refusal> {
        let mac = self.secret.mac(&[b"certificate", username.as_bytes()]);
        if let Some(identity) = self
            .certificate_cache
            .as_ref()
            .and_then(|c| c.get(username, &mac, now))
        {
            return Ok(Identity {
                proof: None,
                ..identity
            });
        }
        let mut found = None;
        for source in &self.sources {
            match source.fetch_certificate_user(username) {
                Ok(Some(record)) => {
                    found = Some((source.kind(), record));
                    break;
                }
                Ok(None) => {}
                Err(e) => return Err(Refusal::Database(e)),
            }
        }
        let Some((backend, record)) = found else {
            return Err(Refusal::UnknownUser);
        };
        Self::row_names(&record, username)?;
        let named = record.holds_name(username);
        let identity = Identity {
            username: username.to_string(),
            user_id: record.user_id.unwrap_or_else(|| username.to_string()),
            superuser: self.is_superuser(username, record.is_superuser, named),
            proof: None,
            backend,
            relay: self.is_relay(username, named),
        };
        if let Some(cache) = &self.certificate_cache {
            cache.put(username, &mac, identity.clone(), now);
        }
        Ok(identity)
    }
}
