//! The WAL positions behind read replicas: where the primary has written to, and how far a
//! streaming replica (a hot standby) has received and replayed. Positions are PostgreSQL's
//! `pg_lsn` values as byte offsets (`u64`), so callers compare them as numbers.

use diesel::sql_types::{BigInt, Bool, Nullable};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::error::StoreError;

/// What a standby reports about its replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatus {
    /// Whether the server is a standby at all (`pg_is_in_recovery()`); a primary reports no
    /// positions.
    pub in_recovery: bool,
    /// Whether a WAL receiver is running (a row in `pg_stat_wal_receiver`, visible without
    /// special privileges): without one the standby receives nothing from the primary.
    pub receiving: bool,
    /// The last WAL position received from the primary, when it streams.
    pub received: Option<u64>,
    /// The last WAL position replayed: every change up to it is visible to reads.
    pub replayed: Option<u64>,
    /// Milliseconds since the commit time of the last transaction replayed.
    pub since_last_replay_ms: Option<u64>,
}

impl StandbyStatus {
    /// How far behind the primary the standby's reads are, in milliseconds, or `None` when
    /// that cannot be told. Receiving, with everything received replayed: 0, however long ago
    /// the last transaction was (an idle primary sends nothing to replay, and the time since
    /// the last replay then grows although the standby is current). Otherwise the time since
    /// the last replayed commit, an upper bound of the real lag; also while no WAL receiver
    /// runs (the standby cut off from the primary cannot tell what it is missing).
    pub fn lag_ms(&self) -> Option<u64> {
        match (self.received, self.replayed) {
            (Some(received), Some(replayed)) if self.receiving && replayed >= received => Some(0),
            _ => self.since_last_replay_ms,
        }
    }
}

#[derive(QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = Bool)]
    in_recovery: bool,
    #[diesel(sql_type = Bool)]
    receiving: bool,
    #[diesel(sql_type = Nullable<BigInt>)]
    received: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    replayed: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    since_last_replay_ms: Option<i64>,
}

/// One round trip to a standby: its received and replayed positions and the age of its last
/// replayed transaction.
pub async fn standby_status(conn: &mut AsyncPgConnection) -> Result<StandbyStatus, StoreError> {
    let row: StatusRow = diesel::sql_query(
        "SELECT pg_is_in_recovery() AS in_recovery, \
         EXISTS (SELECT 1 FROM pg_stat_wal_receiver) AS receiving, \
         (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint AS received, \
         (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS replayed, \
         (extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::bigint \
         AS since_last_replay_ms",
    )
    .get_result(conn)
    .await?;
    let position = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    Ok(StandbyStatus {
        in_recovery: row.in_recovery,
        receiving: row.receiving,
        received: position(row.received),
        replayed: position(row.replayed),
        // A replica's clock slightly behind the primary's gives a negative age: current.
        since_last_replay_ms: row.since_last_replay_ms.map(|v| v.max(0) as u64),
    })
}

#[derive(QueryableByName)]
struct PositionRow {
    #[diesel(sql_type = BigInt)]
    position: i64,
}

/// The primary's WAL insert position: read after a commit, it is at or past the end of that
/// commit's WAL record, so a standby that has replayed up to it sees the change. (The write
/// position, `pg_current_wal_lsn()`, can still be short of the commit record when
/// `synchronous_commit` is off.)
pub async fn wal_insert_position(conn: &mut AsyncPgConnection) -> Result<u64, StoreError> {
    let row: PositionRow = diesel::sql_query(
        "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint AS position",
    )
    .get_result(conn)
    .await?;
    u64::try_from(row.position)
        .map_err(|_| StoreError::Other(format!("negative WAL position {}", row.position).into()))
}

/// Whether a failed statement was cancelled by a standby because it conflicted with the
/// replay of the primary's changes ("canceling statement due to conflict with recovery"):
/// the same statement on the primary does not meet that conflict.
pub fn is_recovery_conflict(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(message)
        if message.to_ascii_lowercase().contains("conflict with recovery"))
}

/// `position` as PostgreSQL writes an LSN (`16/B374D848`).
pub fn format_lsn(position: u64) -> String {
    format!("{:X}/{:X}", position >> 32, position & 0xFFFF_FFFF)
}

/// An LSN as PostgreSQL writes it, back to its position; `None` unless it is two groups of
/// 1 to 8 hexadecimal digits around a `/`.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    let group = |g: &str| {
        (!g.is_empty() && g.len() <= 8 && g.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(g, 16).ok())
            .flatten()
    };
    Some((group(high)? << 32) | group(low)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips_and_rejects_anything_else() {
        for position in [0, 1, 0x16_B374_D848, u64::MAX] {
            assert_eq!(parse_lsn(&format_lsn(position)), Some(position));
        }
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "12",
            "1/2/3",
            "g/1",
            "123456789/1",
            " 1/2",
            "1/-2",
        ] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn recovery_conflicts_are_told_from_other_failures() {
        use diesel::result::{DatabaseErrorKind, Error as DieselError};
        let server = |kind, message: &str| -> StoreError {
            DieselError::DatabaseError(kind, Box::new(message.to_owned())).into()
        };
        let conflict = server(
            DatabaseErrorKind::SerializationFailure,
            "canceling statement due to conflict with recovery",
        );
        assert!(is_recovery_conflict(&conflict));
        let lost = server(
            DatabaseErrorKind::ClosedConnection,
            "server closed the connection unexpectedly",
        );
        assert!(!is_recovery_conflict(&lost));
    }

    #[test]
    fn lag_is_zero_once_everything_received_is_replayed() {
        let status = |received, replayed, since| StandbyStatus {
            in_recovery: true,
            receiving: true,
            received,
            replayed,
            since_last_replay_ms: since,
        };
        assert_eq!(status(Some(10), Some(10), Some(60_000)).lag_ms(), Some(0));
        assert_eq!(
            status(Some(20), Some(10), Some(3_000)).lag_ms(),
            Some(3_000)
        );
        assert_eq!(status(None, Some(10), Some(500)).lag_ms(), Some(500));
        assert_eq!(status(Some(20), Some(10), None).lag_ms(), None);
        let cut_off = StandbyStatus {
            receiving: false,
            ..status(Some(10), Some(10), Some(60_000))
        };
        assert_eq!(cut_off.lag_ms(), Some(60_000));
    }
}
