//! Values bound to a PostgreSQL statement's placeholders, and column values read back, as
//! the text the in-memory decisions take (as the MySQL side reads its values).
//!
//! A placeholder's type is the one the server inferred when it prepared the statement
//! (`username = $1` on a `text` column: text; `rw & $2` on an `integer`: int4), so a value
//! is converted to that type here: the username and user id are text, or a whole number
//! where the column is one; the access level a whole number.

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// One bound value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgValue {
    Text(String),
    Int(i64),
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl PgValue {
    fn as_int(&self) -> Result<i64, BoxError> {
        match self {
            PgValue::Int(n) => Ok(*n),
            PgValue::Text(t) => t
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("'{t}' is not a whole number").into()),
        }
    }

    fn as_text(&self) -> String {
        match self {
            PgValue::Int(n) => n.to_string(),
            PgValue::Text(t) => t.clone(),
        }
    }
}

impl ToSql for PgValue {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match *ty {
            Type::INT2 => i16::try_from(self.as_int()?)?.to_sql(ty, out),
            Type::INT4 => i32::try_from(self.as_int()?)?.to_sql(ty, out),
            Type::INT8 => self.as_int()?.to_sql(ty, out),
            Type::OID => u32::try_from(self.as_int()?)?.to_sql(ty, out),
            Type::FLOAT4 => (self.as_int()? as f32).to_sql(ty, out),
            Type::FLOAT8 => (self.as_int()? as f64).to_sql(ty, out),
            Type::BOOL => (self.as_int()? != 0).to_sql(ty, out),
            Type::UUID => {
                let text = self.as_text();
                let id = uuid::Uuid::parse_str(text.trim())
                    .map_err(|_| format!("'{text}' is not a UUID"))?;
                out.extend_from_slice(id.as_bytes());
                Ok(IsNull::No)
            }
            Type::BYTEA => {
                out.extend_from_slice(self.as_text().as_bytes());
                Ok(IsNull::No)
            }
            // text, varchar, char, name, citext and the other types read from text: their
            // binary form is the text itself.
            _ if is_text(ty) => {
                out.extend_from_slice(self.as_text().as_bytes());
                Ok(IsNull::No)
            }
            _ => Err(format!(
                "a value of type {} cannot be bound here (cast the placeholder, e.g. $1::text)",
                ty.name()
            )
            .into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Types whose binary form is their text.
fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    ) || ty.name() == "citext"
}

/// Whether a column of this type can be read (`text_of`); the start-up check names a query
/// whose columns cannot.
pub fn readable(ty: &Type) -> bool {
    is_text(ty)
        || matches!(
            *ty,
            Type::BOOL
                | Type::INT2
                | Type::INT4
                | Type::INT8
                | Type::OID
                | Type::FLOAT4
                | Type::FLOAT8
                | Type::BYTEA
                | Type::UUID
        )
}

/// A column value in its binary form, of any type.
pub struct Raw(pub Option<Vec<u8>>);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Raw, BoxError> {
        Ok(Raw(Some(raw.to_vec())))
    }
    fn from_sql_null(_: &Type) -> Result<Raw, BoxError> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A column value as the text the decisions read (as `crate::db::value_bytes` does for
/// MySQL): text and bytea as they are, numbers in decimal, booleans as `1`/`0`, a UUID
/// hyphenated. `None` for NULL, or a type `readable` refuses.
pub fn text_of(ty: &Type, raw: &[u8]) -> Option<Vec<u8>> {
    let fixed = |n: usize| raw.get(..n).filter(|_| raw.len() == n);
    let text = match *ty {
        Type::BOOL => fixed(1).map(|b| if b[0] != 0 { "1" } else { "0" }.to_string())?,
        Type::INT2 => i16::from_be_bytes(fixed(2)?.try_into().ok()?).to_string(),
        Type::INT4 => i32::from_be_bytes(fixed(4)?.try_into().ok()?).to_string(),
        Type::INT8 => i64::from_be_bytes(fixed(8)?.try_into().ok()?).to_string(),
        Type::OID => u32::from_be_bytes(fixed(4)?.try_into().ok()?).to_string(),
        Type::FLOAT4 => f32::from_be_bytes(fixed(4)?.try_into().ok()?).to_string(),
        Type::FLOAT8 => f64::from_be_bytes(fixed(8)?.try_into().ok()?).to_string(),
        Type::UUID => uuid::Uuid::from_slice(raw).ok()?.hyphenated().to_string(),
        Type::BYTEA => return Some(raw.to_vec()),
        _ if is_text(ty) => return Some(raw.to_vec()),
        _ => return None,
    };
    Some(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(value: PgValue, ty: Type) -> Result<Vec<u8>, String> {
        let mut out = BytesMut::new();
        value
            .to_sql(&ty, &mut out)
            .map(|_| out.to_vec())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn values_take_the_type_the_server_inferred() {
        assert_eq!(bound(PgValue::Int(2), Type::INT4).unwrap(), [0, 0, 0, 2]);
        assert_eq!(bound(PgValue::Int(2), Type::INT2).unwrap(), [0, 2]);
        assert_eq!(
            bound(PgValue::Text("17".into()), Type::INT8).unwrap(),
            17i64.to_be_bytes()
        );
        assert_eq!(
            bound(PgValue::Text("bob".into()), Type::TEXT).unwrap(),
            b"bob"
        );
        assert_eq!(bound(PgValue::Int(4), Type::VARCHAR).unwrap(), b"4");
        // A name that is no number matches no integer column: refused, never coerced.
        assert!(bound(PgValue::Text("1 OR 1=1".into()), Type::INT4).is_err());
        assert!(bound(PgValue::Int(70_000), Type::INT2).is_err());
        assert!(bound(PgValue::Text("x".into()), Type::JSONB).is_err());
    }

    #[test]
    fn columns_read_as_text() {
        assert_eq!(text_of(&Type::BOOL, &[1]), Some(b"1".to_vec()));
        assert_eq!(text_of(&Type::BOOL, &[0]), Some(b"0".to_vec()));
        assert_eq!(
            text_of(&Type::INT4, &(-7i32).to_be_bytes()),
            Some(b"-7".to_vec())
        );
        assert_eq!(
            text_of(&Type::INT8, &42i64.to_be_bytes()),
            Some(b"42".to_vec())
        );
        assert_eq!(
            text_of(&Type::TEXT, b"$2b$10$x"),
            Some(b"$2b$10$x".to_vec())
        );
        assert_eq!(text_of(&Type::INT4, &[1, 2]), None, "a short value");
        assert_eq!(text_of(&Type::NUMERIC, &[0, 0]), None);
        assert!(!readable(&Type::NUMERIC) && readable(&Type::UUID) && readable(&Type::BPCHAR));
    }
}
