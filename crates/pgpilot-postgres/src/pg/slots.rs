//! Replication slots: listing, creating, advancing and dropping them, and copying the
//! primary's logical slots onto a replica.

use std::path::Path;

use super::sql::{quote_literal, sql_err};
use super::{Postgres, QUERY_TIMEOUT};
use crate::{LogicalSlotState, Lsn, PgError, PgMajor, Result, SlotChange, SlotInfo, Upstream};

impl Postgres {
    /// The replication slots of this server (temporary ones left out), with the LSN Patroni
    /// publishes for each: `confirmed_flush_lsn` of a logical slot, `restart_lsn` of a physical
    /// one.
    pub async fn list_slots(&self) -> Result<Vec<SlotInfo>> {
        // `wal_status` is PostgreSQL 13's.
        let lost = if self.major().await >= PgMajor(13) {
            "coalesce(wal_status = 'lost', false)"
        } else {
            "false"
        };
        let sql = format!(
            "SELECT slot_name::text, slot_type::text, database::text, plugin::text, \
             active, \
             pg_catalog.pg_wal_lsn_diff(CASE WHEN slot_type = 'logical' \
             THEN confirmed_flush_lsn ELSE restart_lsn END, '0/0')::bigint, \
             xmin::text::bigint, {lost} \
             FROM pg_catalog.pg_replication_slots \
             WHERE NOT temporary"
        );
        let rows = self.prepared_query(&sql).await?;
        Ok(rows
            .iter()
            .map(|r| SlotInfo {
                name: r.get(0),
                slot_type: r.get(1),
                database: r.get(2),
                plugin: r.get(3),
                active: r.get(4),
                lsn: r
                    .get::<_, Option<i64>>(5)
                    .and_then(|n| u64::try_from(n).ok()),
                xmin: r
                    .get::<_, Option<i64>>(6)
                    .and_then(|n| u32::try_from(n).ok()),
                lost: r.get(7),
            })
            .collect())
    }

    /// The on-disk state of the logical slots `names` on the primary at `from`, to copy them
    /// onto this replica (Patroni's `copy_logical_slots`): read through a superuser connection
    /// with `pg_read_binary_file`. PostgreSQL 17's failover slots are left out (PostgreSQL
    /// synchronises those itself).
    pub async fn read_logical_slots(
        &self,
        from: &Upstream,
        names: &[String],
    ) -> Result<Vec<LogicalSlotState>> {
        let client = self.connect_to(from).await?;
        let version: i32 = client
            .query_one(
                "SELECT pg_catalog.current_setting('server_version_num')::int",
                &[],
            )
            .await
            .map_err(|e| sql_err(&e))?
            .get(0);
        let failover_slots =
            PgMajor::from_version_num(version).is_some_and(PgMajor::has_failover_slots);
        let not_failover = if failover_slots {
            " NOT failover AND"
        } else {
            ""
        };
        let sql = format!(
            "SELECT slot_name::text, datname::text, plugin::text, \
             pg_catalog.pg_read_binary_file('pg_replslot/' || slot_name || '/state') \
             FROM pg_catalog.pg_get_replication_slots() JOIN pg_catalog.pg_database ON datoid = oid \
             WHERE{not_failover} NOT pg_catalog.pg_is_in_recovery() AND slot_type = 'logical' \
             AND slot_name = ANY($1)"
        );
        let rows = tokio::time::timeout(QUERY_TIMEOUT, client.query(&sql, &[&names]))
            .await
            .map_err(|_| PgError::Timeout(QUERY_TIMEOUT, "query".into()))?
            .map_err(|e| sql_err(&e))?;
        Ok(rows
            .iter()
            .map(|r| LogicalSlotState {
                name: r.get(0),
                database: r.get(1),
                plugin: r.get(2),
                state: r.get(3),
            })
            .collect())
    }

    /// Writes copied logical slots into `pg_replslot` (PostgreSQL must be stopped): each state
    /// file into a fresh `<name>.tmp` directory, synced, then renamed over `<name>`, so that a
    /// crash leaves either the old slot or the new one.
    pub fn install_logical_slots(&self, slots: &[LogicalSlotState]) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PgError::Io { path, source }
        };
        let sync_dir = |dir: &Path| std::fs::File::open(dir).and_then(|d| d.sync_all());
        let root = self.data().join("pg_replslot");
        for slot in slots {
            // Names come from the primary's catalog and our configuration: anything but a
            // valid slot name is refused rather than joined into a path.
            if !crate::valid_slot_name(&slot.name) {
                return Err(PgError::Invalid(format!(
                    "refusing to copy a slot named {:?}",
                    slot.name
                )));
            }
            let dir = root.join(&slot.name);
            let tmp = root.join(format!("{}.tmp", slot.name));
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&tmp)
                .map_err(io(&tmp))?;
            let file = tmp.join("state");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .map_err(io(&file))?;
            f.write_all(&slot.state).map_err(io(&file))?;
            f.sync_all().map_err(io(&file))?;
            sync_dir(&tmp).map_err(io(&tmp))?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
            std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
            sync_dir(&dir).map_err(io(&dir))?;
        }
        sync_dir(&root).map_err(io(&root))
    }

    /// Runs `sql` in database `database` of this server (logical slots live in one database).
    async fn execute_in(&self, database: &str, sql: &str) -> Result<()> {
        let local = Upstream {
            host: self.settings.local_host.clone(),
            port: self.settings.port,
        };
        let client = self.connect_db(&local, database).await?;
        tokio::time::timeout(QUERY_TIMEOUT, client.batch_execute(sql))
            .await
            .map_err(|_| PgError::Timeout(QUERY_TIMEOUT, "query".into()))?
            .map_err(|e| sql_err(&e))
    }

    /// Creates or drops one slot. Drops only an inactive slot (an active one is reported as
    /// [`PgError::Sql`]). Logical slots are created from a connection to their database.
    pub async fn change_slot(&self, change: &SlotChange) -> Result<()> {
        match change {
            SlotChange::CreatePhysical(name) => {
                // Reserves WAL at once, as Patroni does, so that `restart_lsn` is set.
                self.execute(&format!(
                    "SELECT pg_catalog.pg_create_physical_replication_slot({}, true) \
                     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots \
                     WHERE slot_name = {0})",
                    quote_literal(name)
                ))
                .await
            }
            SlotChange::CreateLogical {
                name,
                database,
                plugin,
            } => {
                let sql = format!(
                    "SELECT pg_catalog.pg_create_logical_replication_slot({}, {}) \
                     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots \
                     WHERE slot_name = {0})",
                    quote_literal(name),
                    quote_literal(plugin)
                );
                self.execute_in(database, &sql).await
            }
            SlotChange::AdvanceLogical {
                name,
                database,
                lsn,
            } => {
                let sql = format!(
                    "SELECT pg_catalog.pg_replication_slot_advance({}, {})",
                    quote_literal(name),
                    quote_literal(&Lsn(*lsn).to_string())
                );
                self.execute_in(database, &sql).await
            }
            SlotChange::Advance { name, lsn } => {
                self.execute(&format!(
                    "SELECT pg_catalog.pg_replication_slot_advance({}, {})",
                    quote_literal(name),
                    quote_literal(&Lsn(*lsn).to_string())
                ))
                .await
            }
            SlotChange::Drop(name) => {
                let name = quote_literal(name);
                let rows = self
                    .with_conn(move |c| {
                        let sql = format!(
                            "WITH slots AS (SELECT slot_name, active \
                             FROM pg_catalog.pg_replication_slots WHERE slot_name = {name}), \
                             dropped AS (SELECT pg_catalog.pg_drop_replication_slot(slot_name), \
                             true AS dropped FROM slots WHERE NOT active) \
                             SELECT active, COALESCE(dropped, false) FROM slots \
                             FULL OUTER JOIN dropped ON true"
                        );
                        async move {
                            let r = c.query(&sql, &[]).await;
                            (c, r)
                        }
                    })
                    .await?;
                match rows.first().map(|r| r.get::<_, bool>(0)) {
                    Some(true) => Err(PgError::Sql("slot is active".into())),
                    _ => Ok(()),
                }
            }
        }
    }
}
