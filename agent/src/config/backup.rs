//! `[backup]`: the six-hourly coordinated backup (schedule, repository, credentials, bounds,
//! retention) and its validation.
//!
//! Every path may be relative to the config file's directory. Secrets are read from files
//! (`password_file`, `db_password_file`) and handed to the tools through their environment
//! or a private option file, never on a command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};
use crate::decide::backup::{BackupSchedule, BackupSettings, DEFAULT_SCHEDULE};

/// `[backup]`. See the module docs.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackupSection {
    /// When backups run: a cron expression in UTC, five fields (`minute hour day month
    /// weekday`) or six and seven with seconds first and a year last. A window missed while
    /// the cluster was down runs once when it is back. Default `0 */6 * * *` (every six hours
    /// on the hour).
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// The restic repository: a directory, or any repository restic takes (`sftp:`, `s3:`,
    /// `rest:`...; their credentials through the agent's environment). Must be the same on
    /// every node and reachable from each.
    pub repository: String,
    /// File holding the repository's password (handed to restic as `RESTIC_PASSWORD_FILE`).
    /// Keep it mode 0600. The same password on every node.
    pub password_file: PathBuf,
    /// Working directory for the database copy, the RDB and the throwaway restores (needs
    /// room for a copy of the database). Created when missing. Default
    /// `<node.data_dir>/backup`.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// The files to back up: the shop's GlusterFS directories on this node's mount (for
    /// example `/mnt/shop/var`, `/mnt/shop/pub/media`, `/mnt/shop/pub/static`,
    /// `/mnt/shop/app/etc`). Empty: no files component.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// The MariaDB account the backup uses (never the monitor account, which cannot desync):
    /// it needs `RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR` for `mariadb-backup`,
    /// `SELECT` to count rows, and to set `wsrep_desync` (see the README). Default
    /// `triad_backup`.
    #[serde(default = "default_db_user")]
    pub db_user: String,
    /// File with that account's password (absent: none, socket authentication).
    #[serde(default)]
    pub db_password_file: Option<PathBuf>,
    /// A run's bound: the runner stops by then and the run fails. `1m` to `24h`. Default `2h`.
    #[serde(default = "default_max_duration", with = "humantime_serde")]
    pub max_duration: Duration,
    /// A lease whose holder's agent is silent this long expires, and the backup is retried on
    /// another node once that node's runner has surely stopped (it needs its lease from its
    /// peers, which they withhold after the expiry). Also the leader's slack past
    /// `max_duration`. `5s` to `1h`. Default `60s`.
    #[serde(default = "default_silence", with = "humantime_serde")]
    pub silence: Duration,
    /// Deadline of the verification's throwaway mariadbd (start, count, stop). `10s` to `6h`.
    /// Default `10m`.
    #[serde(default = "default_verify_timeout", with = "humantime_serde")]
    pub verify_timeout: Duration,
    /// Deadline for the desynced node to catch up (receive queue drained, Synced) after the
    /// copy. `1s` to `1h`. Default `5m`.
    #[serde(default = "default_resync_timeout", with = "humantime_serde")]
    pub resync_timeout: Duration,
    /// The programs, when not on Debian's paths.
    #[serde(default)]
    pub programs: BackupPrograms,
    /// How long snapshots are kept (restic `forget --prune` after every run).
    #[serde(default)]
    pub retention: Retention,
}

/// `[backup.programs]`: the tools a run uses.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackupPrograms {
    /// Default `/usr/bin/restic`.
    #[serde(default = "default_restic")]
    pub restic: PathBuf,
    /// Default `/usr/bin/mariadb-backup`.
    #[serde(default = "default_mariadb_backup")]
    pub mariadb_backup: PathBuf,
    /// The throwaway server of the verification. Default `/usr/sbin/mariadbd`.
    #[serde(default = "default_mariadbd")]
    pub mariadbd: PathBuf,
    /// Default `/usr/bin/redis-cli`.
    #[serde(default = "default_redis_cli")]
    pub redis_cli: PathBuf,
    /// Default `/usr/bin/redis-check-rdb`.
    #[serde(default = "default_redis_check_rdb")]
    pub redis_check_rdb: PathBuf,
}

impl Default for BackupPrograms {
    fn default() -> Self {
        BackupPrograms {
            restic: default_restic(),
            mariadb_backup: default_mariadb_backup(),
            mariadbd: default_mariadbd(),
            redis_cli: default_redis_cli(),
            redis_check_rdb: default_redis_check_rdb(),
        }
    }
}

/// `[backup.retention]`: restic's `--keep-within*` tiers, as restic durations (`3d`, `2m`,
/// `1y6m`: years, months, days, hours). Defaults as the platform's: every backup for 3 days,
/// a daily one for a week, a weekly one for 6 weeks, a monthly one for 3 months.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep every snapshot this recent. Default `3d`.
    #[serde(default = "default_keep_within")]
    pub keep_within: String,
    /// Keep the last snapshot of each day this recent. Default `7d`.
    #[serde(default = "default_keep_daily")]
    pub keep_within_daily: String,
    /// Keep the last snapshot of each week this recent. Default `42d`.
    #[serde(default = "default_keep_weekly")]
    pub keep_within_weekly: String,
    /// Keep the last snapshot of each month this recent. Default `3m`.
    #[serde(default = "default_keep_monthly")]
    pub keep_within_monthly: String,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_within: default_keep_within(),
            keep_within_daily: default_keep_daily(),
            keep_within_weekly: default_keep_weekly(),
            keep_within_monthly: default_keep_monthly(),
        }
    }
}

impl Retention {
    /// The tiers as restic `forget` arguments.
    pub fn args(&self) -> Vec<String> {
        vec![
            format!("--keep-within={}", self.keep_within),
            format!("--keep-within-daily={}", self.keep_within_daily),
            format!("--keep-within-weekly={}", self.keep_within_weekly),
            format!("--keep-within-monthly={}", self.keep_within_monthly),
        ]
    }
}

fn default_schedule() -> String {
    DEFAULT_SCHEDULE.to_string()
}
fn default_db_user() -> String {
    "triad_backup".to_string()
}
fn default_max_duration() -> Duration {
    Duration::from_secs(2 * 3600)
}
fn default_silence() -> Duration {
    Duration::from_secs(60)
}
fn default_verify_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_resync_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_restic() -> PathBuf {
    PathBuf::from("/usr/bin/restic")
}
fn default_mariadb_backup() -> PathBuf {
    PathBuf::from("/usr/bin/mariadb-backup")
}
fn default_mariadbd() -> PathBuf {
    PathBuf::from("/usr/sbin/mariadbd")
}
fn default_redis_cli() -> PathBuf {
    PathBuf::from("/usr/bin/redis-cli")
}
fn default_redis_check_rdb() -> PathBuf {
    PathBuf::from("/usr/bin/redis-check-rdb")
}
fn default_keep_within() -> String {
    "3d".to_string()
}
fn default_keep_daily() -> String {
    "7d".to_string()
}
fn default_keep_weekly() -> String {
    "42d".to_string()
}
fn default_keep_monthly() -> String {
    "3m".to_string()
}

/// Whether `s` is a restic duration: one or more `<number><y|m|d|h>`.
fn is_restic_duration(s: &str) -> bool {
    let mut digits = false;
    let mut parts = 0;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits = true;
        } else if matches!(c, 'y' | 'm' | 'd' | 'h') && digits {
            digits = false;
            parts += 1;
        } else {
            return false;
        }
    }
    !digits && parts > 0
}

impl BackupSection {
    /// The parsed schedule (validation made sure it parses).
    pub fn parsed_schedule(&self) -> Result<BackupSchedule, String> {
        BackupSchedule::parse(&self.schedule)
    }

    /// The working directory: `work_dir`, or `<data_dir>/backup`.
    pub fn work_dir(&self, data_dir: &Path) -> PathBuf {
        self.work_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("backup"))
    }

    /// Makes relative paths relative to the config file's directory `base`.
    pub(super) fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.password_file);
        if let Some(p) = self.db_password_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.work_dir.as_mut() {
            fix(p);
        }
        for f in &mut self.files {
            fix(f);
        }
        let local = !self.repository.contains(':');
        if local && Path::new(&self.repository).is_relative() {
            self.repository = base.join(&self.repository).display().to_string();
        }
    }
}

/// The backup decision's settings from the whole configuration, when `[backup]` is set.
pub fn settings(config: &Config) -> Option<BackupSettings> {
    let b = config.backup.as_ref()?;
    let schedule = b.parsed_schedule().ok()?;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Some(BackupSettings {
        schedule,
        max_duration_ms: ms(b.max_duration),
        silence_ms: ms(b.silence),
        ping_lease_ms: ms(config.failover.lease),
        clock_margin_ms: ms(config.failover.clock_margin),
        freshness_ms: ms(config.failover.freshness),
        db: config.galera.is_some(),
        files: !b.files.is_empty(),
    })
}

fn within(d: Duration, lo: Duration, hi: Duration) -> bool {
    d >= lo && d <= hi
}

/// The wall clock, for the one question validation asks of it (does the schedule still fire?).
/// Validation is an adapter: it reads files, and this clock.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
fn wall_clock() -> crate::ids::UnixMillis {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    crate::ids::UnixMillis(ms)
}

/// Checks `[backup]`; every error names its key and what to do.
pub(super) fn validate(path: &Path, config: &Config) -> Result<(), ConfigError> {
    let Some(b) = &config.backup else {
        return Ok(());
    };
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: path.to_path_buf(),
        key: format!("backup.{key}"),
        message,
    };
    let schedule = b.parsed_schedule().map_err(|e| invalid("schedule", e))?;
    // A schedule whose last time is past never backs up.
    if schedule.next_after(wall_clock()).is_none() {
        return Err(invalid(
            "schedule",
            format!(
                "`{}` never fires again; give a time in the future",
                b.schedule
            ),
        ));
    }
    if b.repository.trim().is_empty() {
        return Err(invalid(
            "repository",
            "must name the restic repository (a directory, or sftp:/s3:/rest: ...)".into(),
        ));
    }
    match std::fs::read(&b.password_file) {
        Ok(p) if p.iter().all(u8::is_ascii_whitespace) => {
            return Err(invalid(
                "password_file",
                format!(
                    "{} is empty; write the repository's password in it (mode 0600)",
                    b.password_file.display()
                ),
            ))
        }
        Ok(_) => {}
        Err(e) => {
            return Err(invalid(
                "password_file",
                format!("cannot read {}: {e}", b.password_file.display()),
            ))
        }
    }
    super::check_secret_file(path, &b.password_file, "backup.password_file")?;
    if let Some(f) = &b.db_password_file {
        std::fs::metadata(f).map_err(|e| {
            invalid(
                "db_password_file",
                format!("cannot read {}: {e}", f.display()),
            )
        })?;
        super::check_secret_file(path, f, "backup.db_password_file")?;
    }
    if b.db_user.trim().is_empty() {
        return Err(invalid("db_user", "must not be empty".into()));
    }
    let (s, m, h) = (
        Duration::from_secs(1),
        Duration::from_secs(60),
        Duration::from_secs(3600),
    );
    for (key, d, lo, hi) in [
        ("max_duration", b.max_duration, m, 24 * h),
        ("silence", b.silence, 5 * s, h),
        ("verify_timeout", b.verify_timeout, 10 * s, 6 * h),
        ("resync_timeout", b.resync_timeout, s, h),
    ] {
        if !within(d, lo, hi) {
            return Err(invalid(
                key,
                format!(
                    "{} is outside {} to {}",
                    humantime::format_duration(d),
                    humantime::format_duration(lo),
                    humantime::format_duration(hi)
                ),
            ));
        }
    }
    if b.silence <= config.failover.lease {
        return Err(invalid(
            "silence",
            format!(
                "must be above failover.lease ({}): a silent holder's runner stops only once \
                 its lease from its peers ran out",
                humantime::format_duration(config.failover.lease)
            ),
        ));
    }
    for (i, f) in b.files.iter().enumerate() {
        if !f.is_absolute() {
            return Err(invalid(
                &format!("files[{i}]"),
                format!("{} must be absolute", f.display()),
            ));
        }
        if let Some(g) = &config.gluster {
            if !g.mounts.is_empty() && !g.mounts.iter().any(|m| f.starts_with(m)) {
                return Err(invalid(
                    &format!("files[{i}]"),
                    format!(
                        "{} is not under a [gluster] mount ({}); back up the shared \
                         directories from this node's mount",
                        f.display(),
                        g.mounts
                            .iter()
                            .map(|m| m.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
    }
    let r = &b.retention;
    for (key, v) in [
        ("retention.keep_within", &r.keep_within),
        ("retention.keep_within_daily", &r.keep_within_daily),
        ("retention.keep_within_weekly", &r.keep_within_weekly),
        ("retention.keep_within_monthly", &r.keep_within_monthly),
    ] {
        if !is_restic_duration(v) {
            return Err(invalid(
                key,
                format!("`{v}` is not a restic duration (like `3d`, `6w` is not one: `42d`)"),
            ));
        }
    }
    if config.galera.is_some() && config.mariadb.is_none() {
        return Err(invalid(
            "db_user",
            "backing up the database needs [mariadb] (its socket or address)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restic_durations() {
        for (s, ok) in [
            ("3d", true),
            ("1y6m", true),
            ("42d", true),
            ("12h", true),
            ("6w", false),
            ("d", false),
            ("3", false),
            ("", false),
            ("3d ", false),
        ] {
            assert_eq!(is_restic_duration(s), ok, "{s:?}");
        }
    }

    #[test]
    fn retention_args_are_restics_flags() {
        assert_eq!(
            Retention::default().args(),
            [
                "--keep-within=3d",
                "--keep-within-daily=7d",
                "--keep-within-weekly=42d",
                "--keep-within-monthly=3m"
            ]
        );
    }
}
