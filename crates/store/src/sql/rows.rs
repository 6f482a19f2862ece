//! Row mapping: the column lists, parsing of rows into row types, and the row-tag checks
//! on every read.

use std::str::FromStr;

use keyward_domain::{InstanceId, KeyId, KeyState, Role, TokenId, VersionId};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::*;
use crate::rowtag::{self, TagInput};
use crate::{
    ApiKeyRow, GrantRow, InstanceRow, KeyRow, StoreError, StoreResult, TokenRow, VersionRow,
};

impl SqlStore {
    pub(crate) fn row_auth(&self) -> StoreResult<std::sync::Arc<dyn RowAuth>> {
        self.auth.read().clone().ok_or(StoreError::RowAuthMissing)
    }

    /// The tag of a row about to be written.
    pub(crate) fn tag_of(&self, input: &TagInput) -> StoreResult<Vec<u8>> {
        Ok(self.row_auth()?.tag(input.as_bytes()))
    }

    /// Checks a row just read against its stored tag. A row that fails is logged (table and
    /// id, never a value), counted, and refused with [`StoreError::Integrity`].
    pub(crate) fn check_tag(
        &self,
        table: &'static str,
        id: &str,
        input: &TagInput,
        tag: Option<&[u8]>,
    ) -> StoreResult<()> {
        let auth = self.row_auth()?;
        let ok = match tag {
            Some(t) => auth.verify(input.as_bytes(), t),
            None => auth.accept_untagged(),
        };
        if ok {
            return Ok(());
        }
        rowtag::count_failure(table);
        tracing::error!(
            table,
            id,
            tagged = tag.is_some(),
            "a stored row failed its integrity check and was refused: the database may have been tampered with"
        );
        Err(StoreError::Integrity {
            table,
            id: id.to_string(),
        })
    }
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(crate) fn get<'r, T>(row: &'r AnyRow, col: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get::<T, _>(col)
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

pub(crate) fn uuid_col<T>(
    row: &AnyRow,
    col: &str,
    f: fn(&str) -> Result<T, keyward_domain::DomainError>,
) -> StoreResult<T> {
    let s: String = get(row, col)?;
    f(&s).map_err(|_| corrupt(col))
}

pub(crate) const KEY_COLS: &str = "id, instance_id, name, description, tags, state, extractable, imported, key_ring_id, expiration_date, created_at, created_by, updated_at, last_rotate_date, deletion_date, deleted_by, state_changed_at, current_version, attrs, row_version, next_rotation_at, auth_tag";

pub(crate) fn key_from_row(row: &AnyRow) -> StoreResult<KeyRow> {
    let tags: String = get(row, "tags")?;
    let attrs: String = get(row, "attrs")?;
    Ok(KeyRow {
        id: uuid_col(row, "id", KeyId::parse)?,
        instance_id: uuid_col(row, "instance_id", InstanceId::parse)?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        tags: serde_json::from_str(&tags).map_err(|_| corrupt("tags"))?,
        state: KeyState::from_code(get(row, "state")?).ok_or_else(|| corrupt("state"))?,
        extractable: get::<i64>(row, "extractable")? != 0,
        imported: get::<i64>(row, "imported")? != 0,
        key_ring_id: get(row, "key_ring_id")?,
        expiration_date: get(row, "expiration_date")?,
        created_at: get(row, "created_at")?,
        created_by: get(row, "created_by")?,
        updated_at: get(row, "updated_at")?,
        last_rotate_date: get(row, "last_rotate_date")?,
        deletion_date: get(row, "deletion_date")?,
        deleted_by: get(row, "deleted_by")?,
        state_changed_at: get(row, "state_changed_at")?,
        current_version: uuid_col(row, "current_version", VersionId::parse)?,
        attrs: serde_json::from_str(&attrs).map_err(|_| corrupt("attrs"))?,
        row_version: get(row, "row_version")?,
        next_rotation_at: get(row, "next_rotation_at")?,
    })
}

pub(crate) const VERSION_COLS: &str =
    "id, key_id, instance_id, seq, created_at, sealed, master_key_id, auth_tag";

pub(crate) fn version_from_row(row: &AnyRow) -> StoreResult<VersionRow> {
    Ok(VersionRow {
        id: uuid_col(row, "id", VersionId::parse)?,
        key_id: uuid_col(row, "key_id", KeyId::parse)?,
        instance_id: uuid_col(row, "instance_id", InstanceId::parse)?,
        seq: get(row, "seq")?,
        created_at: get(row, "created_at")?,
        sealed: get(row, "sealed")?,
        master_key_id: get(row, "master_key_id")?,
    })
}

pub(crate) const TOKEN_COLS: &str = "instance_id, token_id, created_at, expires_at, expiration_secs, max_retrievals, remaining, nonce, public_pem, sealed_private, master_key_id, auth_tag";

pub(crate) fn token_from_row(row: &AnyRow) -> StoreResult<TokenRow> {
    Ok(TokenRow {
        instance_id: uuid_col(row, "instance_id", InstanceId::parse)?,
        token_id: uuid_col(row, "token_id", TokenId::parse)?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        expiration_secs: get(row, "expiration_secs")?,
        max_retrievals: get(row, "max_retrievals")?,
        remaining: get(row, "remaining")?,
        nonce: get(row, "nonce")?,
        public_pem: get(row, "public_pem")?,
        sealed_private: get(row, "sealed_private")?,
        master_key_id: get(row, "master_key_id")?,
    })
}

/// The columns of an API key row as every read selects them.
pub(crate) const API_KEY_COLS: &str = "id, iam_id, key_hash, name, created_at, auth_tag";

pub(crate) fn api_key_from_row(row: &AnyRow) -> StoreResult<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: get(row, "id")?,
        iam_id: get(row, "iam_id")?,
        name: get(row, "name")?,
        created_at: get(row, "created_at")?,
    })
}

/// The `auth_tag` column of a row.
pub(crate) fn tag_col(row: &AnyRow) -> StoreResult<Option<Vec<u8>>> {
    get(row, "auth_tag")
}

impl SqlStore {
    /// Parses a row of `table` and checks it against its tag.
    pub(crate) fn checked<T>(
        &self,
        table: &'static str,
        row: &AnyRow,
        parse: impl Fn(&AnyRow) -> StoreResult<T>,
        id: impl Fn(&T) -> String,
        input: impl Fn(&T) -> TagInput,
    ) -> StoreResult<T> {
        let v = parse(row)?;
        self.check_tag(table, &id(&v), &input(&v), tag_col(row)?.as_deref())?;
        Ok(v)
    }

    /// As [`SqlStore::checked`] for rows that grant access: a row that fails its check (logged
    /// and counted) is `None`, so a row inserted without the master key grants nothing.
    pub(crate) fn checked_or_absent<T>(
        &self,
        table: &'static str,
        row: &AnyRow,
        parse: impl Fn(&AnyRow) -> StoreResult<T>,
        id: impl Fn(&T) -> String,
        input: impl Fn(&T) -> TagInput,
    ) -> StoreResult<Option<T>> {
        match self.checked(table, row, parse, id, input) {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::Integrity { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A key row, checked against its tag.
    pub(crate) fn key_checked(&self, row: &AnyRow) -> StoreResult<KeyRow> {
        self.checked(
            "keys",
            row,
            key_from_row,
            |k| k.id.to_string(),
            rowtag::key_input,
        )
    }

    pub(crate) fn version_checked(&self, row: &AnyRow) -> StoreResult<VersionRow> {
        self.checked(
            "key_versions",
            row,
            version_from_row,
            |v| v.id.to_string(),
            rowtag::version_input,
        )
    }

    pub(crate) fn token_checked(&self, row: &AnyRow) -> StoreResult<TokenRow> {
        self.checked(
            "import_tokens",
            row,
            token_from_row,
            |t| t.instance_id.to_string(),
            rowtag::token_input,
        )
    }

    pub(crate) fn api_key_checked(&self, row: &AnyRow) -> StoreResult<Option<ApiKeyRow>> {
        let hash: Vec<u8> = get(row, "key_hash")?;
        self.checked_or_absent(
            "api_keys",
            row,
            api_key_from_row,
            |k| k.id.clone(),
            |k| rowtag::api_key_input(k, &hash),
        )
    }

    pub(crate) fn grant_checked(&self, row: &AnyRow) -> StoreResult<Option<GrantRow>> {
        self.checked_or_absent(
            "role_grants",
            row,
            |r| {
                Ok(GrantRow {
                    instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
                    iam_id: get(r, "iam_id")?,
                    role: Role::from_str(&get::<String>(r, "role")?)
                        .map_err(|_| corrupt("role"))?,
                    created_at: get(r, "created_at")?,
                })
            },
            |g| format!("{}/{}/{}", g.instance_id, g.iam_id, g.role.as_str()),
            rowtag::grant_input,
        )
    }

    pub(crate) fn instance_checked(&self, row: &AnyRow) -> StoreResult<Option<InstanceRow>> {
        self.checked_or_absent(
            "instances",
            row,
            |r| {
                Ok(InstanceRow {
                    id: uuid_col(r, "id", InstanceId::parse)?,
                    name: get(r, "name")?,
                    created_at: get(r, "created_at")?,
                })
            },
            |i| i.id.to_string(),
            rowtag::instance_input,
        )
    }
}

pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}
