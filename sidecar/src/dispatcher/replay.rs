//! Server tokens used already: each `jti` is remembered in Redis until its
//! token expires, so a captured token cannot be replayed.

use crate::db::{Db, DbError};
use crate::keys;

#[derive(Clone)]
pub struct UsedTokens {
    db: Db,
}

impl UsedTokens {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Records `jti` for `keep_secs`; false if it was recorded already.
    pub async fn first_use(&self, jti: &str, keep_secs: u64) -> Result<bool, DbError> {
        let mut conn = self.db.conn();
        let set: Option<String> = self
            .db
            .bounded(
                redis::cmd("SET")
                    .arg(keys::used_server_token(jti))
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(keep_secs.max(1))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(set.is_some())
    }
}
