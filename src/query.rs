//! Turns an auth-plug style query (`'%s'`, `%s`, `%d`) or a `?` query into a prepared
//! statement text plus the list of values to bind, so no value is ever spliced into SQL.

use std::fmt;

/// A value the plugin binds to one placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Username,
    /// The access level of an ACL check (auth-plug's `%d`).
    Access,
    /// The user's chat identity (`user_id` column, or the username).
    UserId,
}

/// A validated statement: `sql` has only `?` placeholders, `params` says what each binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub sql: String,
    pub params: Vec<Param>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError(pub String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one kind of query may bind.
///
/// `percent_s` lists, in order, what the first and second `%s` mean; `percent_d` what `%d`
/// means (if allowed); `question` what the n-th `?` means.
#[derive(Debug, Clone, Copy)]
pub struct Bindings {
    pub percent_s: &'static [Param],
    pub percent_d: Option<Param>,
    pub question: &'static [Param],
}

/// `userquery` and `superquery`: the username only (auth-plug passes nothing else).
pub const USER_BINDINGS: Bindings = Bindings {
    percent_s: &[Param::Username],
    percent_d: None,
    question: &[Param::Username],
};

/// `aclquery`: the username and the access level, as auth-plug's MySQL backend passes them
/// (`sprintf(query, aclquery, username, access)`). Rows are loaded per user, not per client;
/// a pattern's `%c` stands for the client id.
pub const ACL_BINDINGS: Bindings = Bindings {
    percent_s: &[Param::Username],
    percent_d: Some(Param::Access),
    question: &[Param::Username, Param::Access],
};

/// `groupsquery`: the user's chat identity (the `user_id` column, or the username).
pub const GROUP_BINDINGS: Bindings = Bindings {
    percent_s: &[Param::UserId],
    percent_d: None,
    question: &[Param::UserId],
};

/// Translates `text`. Placeholders inside quoted SQL strings other than a lone `'%s'` are
/// refused: they would be literal text to the server, which is never what the writer meant.
pub fn translate(text: &str, bindings: Bindings) -> Result<Query, QueryError> {
    let bytes = text.as_bytes();
    if text.trim().is_empty() {
        return Err(QueryError("is empty".into()));
    }
    let mut sql = Vec::with_capacity(bytes.len());
    let mut percent_params = Vec::new();
    let mut percent_s_seen = 0usize;
    let mut question_count = 0usize;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if let Some(q) = quote {
            match c {
                b'\\' if next.is_some() => {
                    sql.extend_from_slice(&bytes[i..i + 2]);
                    i += 2;
                    continue;
                }
                b'%' if next == Some(b'%') => {
                    sql.push(b'%');
                    i += 2;
                    continue;
                }
                b'%' => {
                    let shown = text[i..].chars().take(2).collect::<String>();
                    return Err(QueryError(format!(
                        "has '{shown}' inside a quoted string at byte {i}; only '%s' standing \
                         alone in quotes is a parameter (write %% for a literal %)"
                    )));
                }
                _ if c == q && next == Some(q) => {
                    sql.extend_from_slice(&[q, q]);
                    i += 2;
                    continue;
                }
                _ if c == q => quote = None,
                _ => {}
            }
            sql.push(c);
            i += 1;
            continue;
        }
        if (c == b'\'' || c == b'"') && bytes[i..].starts_with(&[c, b'%', b's', c]) {
            percent_params.push(percent_s(bindings, &mut percent_s_seen)?);
            sql.push(b'?');
            i += 4;
            continue;
        }
        match c {
            b'\'' | b'"' | b'`' => quote = Some(c),
            b'%' => {
                match next {
                    Some(b's') => percent_params.push(percent_s(bindings, &mut percent_s_seen)?),
                    Some(b'd') => percent_params.push(bindings.percent_d.ok_or_else(|| {
                        QueryError("uses %d, but this query has no access level to bind".into())
                    })?),
                    Some(b'%') => {
                        sql.push(b'%');
                        i += 2;
                        continue;
                    }
                    _ => {
                        let shown = text[i..].chars().take(2).collect::<String>();
                        return Err(QueryError(format!(
                            "has an unknown placeholder '{shown}' at byte {i}; only '%s', %s and %d \
                             (or ?) are placeholders, and %% is a literal %"
                        )));
                    }
                }
                sql.push(b'?');
                i += 2;
                continue;
            }
            b'?' => question_count += 1,
            _ => {}
        }
        sql.push(c);
        i += 1;
    }
    if quote.is_some() {
        return Err(QueryError("has an unterminated quoted string".into()));
    }
    if question_count > 0 && !percent_params.is_empty() {
        return Err(QueryError(
            "mixes ? placeholders with auth-plug %s/%d ones; use one style".into(),
        ));
    }
    let params = if question_count > 0 {
        if question_count > bindings.question.len() {
            return Err(QueryError(format!(
                "has {question_count} ? placeholders; this query binds at most {} ({})",
                bindings.question.len(),
                describe(bindings.question)
            )));
        }
        bindings.question[..question_count].to_vec()
    } else {
        percent_params
    };
    let sql = String::from_utf8(sql).expect("only ASCII bytes were replaced");
    Ok(Query { sql, params })
}

fn percent_s(bindings: Bindings, seen: &mut usize) -> Result<Param, QueryError> {
    let param = bindings.percent_s.get(*seen).copied().ok_or_else(|| {
        QueryError(format!(
            "has more %s placeholders than this query can bind ({})",
            describe(bindings.percent_s)
        ))
    })?;
    *seen += 1;
    Ok(param)
}

fn describe(params: &[Param]) -> String {
    params
        .iter()
        .map(|p| match p {
            Param::Username => "username",
            Param::Access => "access level",
            Param::UserId => "user id",
        })
        .collect::<Vec<_>>()
        .join(", then ")
}

/// Translates a PostgreSQL query: `$1`, `$2` (the n-th value `question` lists), EMQX's
/// `${username}`, or auth-plug's MySQL-style `%s` / `'%s'` / `%d` (for a query moved from
/// MySQL, and the default `groupsquery`), into a statement with `$n` placeholders only.
/// Quoted strings (`'..'`, `E'..'`, `"..."`, `$tag$..$tag$`) and comments are kept as they
/// are; a placeholder inside one is literal text to the server. `?` is PostgreSQL's jsonb
/// operator and stays one.
pub fn translate_pg(text: &str, bindings: Bindings) -> Result<Query, QueryError> {
    if text.trim().is_empty() {
        return Err(QueryError("is empty".into()));
    }
    let bytes = text.as_bytes();
    let mut sql = String::with_capacity(text.len());
    // `$n` / `${username}`: the highest n used; `%s` style: the values in order.
    let mut numbered_max = 0usize;
    let mut numbered_seen: Vec<bool> = vec![false; bindings.question.len()];
    let mut percent_params: Vec<Param> = Vec::new();
    let mut percent_s_seen = 0usize;
    let mut i = 0;
    let position_of = |param: Param| bindings.question.iter().position(|p| *p == param);
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        // Quoted text and comments, copied whole.
        let end = match c {
            b'\'' => {
                let escapes = i > 0
                    && matches!(bytes[i - 1], b'e' | b'E')
                    && (i < 2 || !(bytes[i - 2].is_ascii_alphanumeric() || bytes[i - 2] == b'_'));
                if bytes[i..].starts_with(b"'%s'") {
                    percent_params.push(percent_s(bindings, &mut percent_s_seen)?);
                    sql.push_str(&format!("${}", percent_params.len()));
                    i += 4;
                    continue;
                }
                Some(quoted_end(bytes, i, b'\'', escapes)?)
            }
            b'"' => Some(quoted_end(bytes, i, b'"', false)?),
            b'-' if next == Some(b'-') => Some(
                bytes[i..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(bytes.len(), |n| i + n + 1),
            ),
            b'/' if next == Some(b'*') => Some(
                text[i + 2..]
                    .find("*/")
                    .map(|n| i + 2 + n + 2)
                    .ok_or_else(|| QueryError("has an unterminated /* comment".into()))?,
            ),
            b'$' if next.is_some_and(|n| n == b'$' || n.is_ascii_alphabetic() || n == b'_') => {
                // A dollar-quoted string: $tag$ ... $tag$.
                let tag_len = bytes[i + 1..].iter().position(|b| *b == b'$').filter(|n| {
                    bytes[i + 1..i + 1 + n]
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
                });
                match tag_len {
                    Some(n) => {
                        let tag = &text[i..i + n + 2];
                        let body = i + n + 2;
                        Some(
                            text[body..]
                                .find(tag)
                                .map(|m| body + m + tag.len())
                                .ok_or_else(|| {
                                    QueryError(format!("has an unterminated {tag} string"))
                                })?,
                        )
                    }
                    None => None,
                }
            }
            _ => None,
        };
        if let Some(end) = end {
            sql.push_str(&text[i..end]);
            i = end;
            continue;
        }
        match (c, next) {
            (b'$', Some(b'{')) => {
                let close = text[i..]
                    .find('}')
                    .ok_or_else(|| QueryError(format!("has an unterminated ${{ at byte {i}")))?;
                let name = &text[i + 2..i + close];
                let param = match name {
                    "username" => Param::Username,
                    other => {
                        return Err(QueryError(format!(
                            "has the placeholder ${{{other}}}; only ${{username}} is bound here"
                        )));
                    }
                };
                let n = position_of(param).ok_or_else(|| {
                    QueryError(format!(
                        "uses ${{username}}, but this query binds {}",
                        describe(bindings.question)
                    ))
                })? + 1;
                numbered_seen[n - 1] = true;
                numbered_max = numbered_max.max(n);
                sql.push_str(&format!("${n}"));
                i += close + 1;
            }
            (b'$', Some(d)) if d.is_ascii_digit() => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let n: usize = text[i + 1..i + 1 + digits].parse().unwrap_or(usize::MAX);
                if n == 0 || n > bindings.question.len() {
                    return Err(QueryError(format!(
                        "has ${} at byte {i}; this query binds ${} at most ({})",
                        &text[i + 1..i + 1 + digits],
                        bindings.question.len(),
                        describe(bindings.question)
                    )));
                }
                numbered_seen[n - 1] = true;
                numbered_max = numbered_max.max(n);
                sql.push_str(&text[i..i + 1 + digits]);
                i += 1 + digits;
            }
            (b'%', Some(b's')) => {
                percent_params.push(percent_s(bindings, &mut percent_s_seen)?);
                sql.push_str(&format!("${}", percent_params.len()));
                i += 2;
            }
            (b'%', Some(b'd')) => {
                percent_params.push(bindings.percent_d.ok_or_else(|| {
                    QueryError("uses %d, but this query has no access level to bind".into())
                })?);
                sql.push_str(&format!("${}", percent_params.len()));
                i += 2;
            }
            _ => {
                let width = text[i..].chars().next().map_or(1, char::len_utf8);
                sql.push_str(&text[i..i + width]);
                i += width;
            }
        }
    }
    if numbered_max > 0 && !percent_params.is_empty() {
        return Err(QueryError(
            "mixes $n placeholders with auth-plug %s/%d ones; use one style".into(),
        ));
    }
    let params = if numbered_max > 0 {
        if let Some(missing) = numbered_seen[..numbered_max].iter().position(|seen| !seen) {
            return Err(QueryError(format!(
                "uses ${numbered_max} but not ${}; PostgreSQL cannot tell the type of a value \
                 the query does not use",
                missing + 1
            )));
        }
        bindings.question[..numbered_max].to_vec()
    } else {
        percent_params
    };
    Ok(Query { sql, params })
}

/// The end (one past the closing quote) of the quoted text starting at `start`.
fn quoted_end(bytes: &[u8], start: usize, quote: u8, escapes: bool) -> Result<usize, QueryError> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if escapes => i += 2,
            c if c == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(QueryError("has an unterminated quoted string".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_plug_quoted_username_becomes_a_placeholder() {
        let q = translate(
            "SELECT pw FROM users WHERE username = '%s' LIMIT 1",
            USER_BINDINGS,
        )
        .unwrap();
        assert_eq!(q.sql, "SELECT pw FROM users WHERE username = ? LIMIT 1");
        assert_eq!(q.params, vec![Param::Username]);
    }

    #[test]
    fn acl_query_binds_username_and_access_in_order() {
        let q = translate(
            "SELECT topic FROM acls WHERE (username = \"%s\") AND (rw >= %d)",
            ACL_BINDINGS,
        )
        .unwrap();
        assert_eq!(
            q.sql,
            "SELECT topic FROM acls WHERE (username = ?) AND (rw >= ?)"
        );
        assert_eq!(q.params, vec![Param::Username, Param::Access]);
        // auth-plug passes no client id to the query; patterns use %c instead.
        assert!(translate("SELECT t FROM a WHERE u = '%s' OR c = '%s'", ACL_BINDINGS).is_err());
    }

    #[test]
    fn groups_query_binds_the_user_id() {
        let q = translate(
            "SELECT group_id FROM m WHERE user_id = '%s'",
            GROUP_BINDINGS,
        )
        .unwrap();
        assert_eq!(q.params, vec![Param::UserId]);
    }

    #[test]
    fn question_marks_bind_in_declared_order() {
        let q = translate("SELECT t FROM a WHERE u = ? AND rw >= ?", ACL_BINDINGS).unwrap();
        assert_eq!(q.params, vec![Param::Username, Param::Access]);
        assert!(translate("SELECT 1 WHERE a = ? AND b = ?", USER_BINDINGS).is_err());
    }

    #[test]
    fn literal_percent_and_question_inside_strings_are_kept() {
        let q = translate(
            "SELECT pw FROM users WHERE username = '%s' AND note NOT LIKE 'x%%?'",
            USER_BINDINGS,
        )
        .unwrap();
        assert_eq!(
            q.sql,
            "SELECT pw FROM users WHERE username = ? AND note NOT LIKE 'x%?'"
        );
        assert_eq!(q.params, vec![Param::Username]);
    }

    #[test]
    fn stray_percent_sequences_are_refused() {
        // auth-plug crashed on exactly this.
        let err = translate("SELECT pw FROM users WHERE username = '%c'", USER_BINDINGS);
        assert!(err.unwrap_err().0.contains("'%c'"));
        assert!(translate("SELECT pw FROM u WHERE n = %x", USER_BINDINGS).is_err());
        assert!(translate("SELECT pw FROM u WHERE n LIKE '%s%%'", USER_BINDINGS).is_err());
        assert!(translate("SELECT pw FROM u WHERE n = 50%", USER_BINDINGS).is_err());
    }

    #[test]
    fn user_queries_cannot_bind_client_id_or_access() {
        assert!(translate("SELECT pw FROM u WHERE n='%s' AND c='%s'", USER_BINDINGS).is_err());
        assert!(translate("SELECT pw FROM u WHERE n='%s' AND rw=%d", USER_BINDINGS).is_err());
    }

    #[test]
    fn mixing_styles_and_broken_quotes_are_refused() {
        assert!(translate("SELECT pw FROM u WHERE n='%s' AND c=?", USER_BINDINGS).is_err());
        assert!(translate("SELECT pw FROM u WHERE n='%s", USER_BINDINGS).is_err());
        assert!(translate("   ", USER_BINDINGS).is_err());
    }

    #[test]
    fn escaped_quotes_do_not_end_a_string() {
        let q = translate(
            r"SELECT pw FROM u WHERE n = '%s' AND x <> 'it''s \' %%'",
            USER_BINDINGS,
        )
        .unwrap();
        assert_eq!(q.sql, r"SELECT pw FROM u WHERE n = ? AND x <> 'it''s \' %'");
    }

    #[test]
    fn non_ascii_text_survives() {
        let q = translate("SELECT pw FROM usërs WHERE n = ?", USER_BINDINGS).unwrap();
        assert_eq!(q.sql, "SELECT pw FROM usërs WHERE n = ?");
    }

    #[test]
    fn postgres_placeholders_are_numbered_values() {
        let q = translate_pg(
            "SELECT pw FROM account WHERE username = $1 limit 1",
            USER_BINDINGS,
        )
        .unwrap();
        assert_eq!(q.sql, "SELECT pw FROM account WHERE username = $1 limit 1");
        assert_eq!(q.params, vec![Param::Username]);
        let q = translate_pg(
            "SELECT topic FROM acls WHERE (username = $1) AND (rw & $2) > 0",
            ACL_BINDINGS,
        )
        .unwrap();
        assert_eq!(q.params, vec![Param::Username, Param::Access]);
        // EMQX's placeholder, and auth-plug's MySQL spelling.
        let q = translate_pg(
            "SELECT password_hash, salt, is_superuser FROM mqtt_user where username = ${username} LIMIT 1",
            USER_BINDINGS,
        )
        .unwrap();
        assert_eq!(
            q.sql,
            "SELECT password_hash, salt, is_superuser FROM mqtt_user where username = $1 LIMIT 1"
        );
        let q = translate_pg("SELECT g FROM m WHERE user_id = '%s'", GROUP_BINDINGS).unwrap();
        assert_eq!(q.sql, "SELECT g FROM m WHERE user_id = $1");
        assert_eq!(q.params, vec![Param::UserId]);
        let q = translate_pg("SELECT t FROM a WHERE u = %s AND rw >= %d", ACL_BINDINGS).unwrap();
        assert_eq!(q.sql, "SELECT t FROM a WHERE u = $1 AND rw >= $2");
    }

    #[test]
    fn postgres_quotes_and_comments_are_kept_and_bad_placeholders_refused() {
        let text = "SELECT pw FROM u WHERE name = $1 AND note <> '$2 %s' AND x <> $$ $3 $$ \
                    AND y <> $q$ ${username} $q$ AND z <> E'it\\'s $2' -- $4\n AND j ? 'k'";
        let q = translate_pg(text, USER_BINDINGS).unwrap();
        assert_eq!(q.sql, text);
        assert_eq!(q.params, vec![Param::Username]);
        for bad in [
            "SELECT pw FROM u WHERE name = $2",
            "SELECT pw FROM u WHERE name = $0",
            "SELECT pw FROM u WHERE name = ${clientid}",
            "SELECT pw FROM u WHERE name = $1 AND x = %s",
            "SELECT pw FROM u WHERE name = 'open",
            "SELECT pw FROM u WHERE name = $x$ open",
            "  ",
        ] {
            assert!(translate_pg(bad, USER_BINDINGS).is_err(), "{bad}");
        }
        assert!(translate_pg("SELECT t FROM a WHERE rw >= $2", ACL_BINDINGS).is_err());
        assert!(translate_pg("SELECT g FROM m WHERE u = ${username}", GROUP_BINDINGS).is_err());
    }
}
