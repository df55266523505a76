//! Builds the probes an agent runs from its validated configuration: its own node's services,
//! plus its peers' Redis and MariaDB when cross-checks are on. Secrets are read here, once.
//!
//! The MariaDB probes check the auto-increment settings against
//! `galera.auto_increment_increment` (peers' too, with cross-checks); without `[galera]` they
//! do not check them.

use std::sync::Arc;

use super::gluster::{GlusterProbe, MountProbe};
use super::mariadb::{GaleraNotes, MariadbProbe, MysqlTarget};
use super::phpfpm::PhpfpmProbe;
use super::redis::RedisProbe;
use super::{Probe, ProbeId, Service};
use crate::config::{self, ConfigError, Validated};
use crate::helper_unit::HelperUnit;
use crate::ids::NodeId;

fn id(subject: NodeId, service: Service, target: &str) -> ProbeId {
    ProbeId {
        subject,
        service,
        target: target.to_string(),
    }
}

/// Every probe this agent runs, sorted by id.
pub fn from_config(v: &Validated) -> Result<Vec<Arc<dyn Probe>>, ConfigError> {
    from_config_with(v, None)
}

/// [`from_config`], with the local Galera recovery's notes attached to the local MariaDB
/// probe.
pub fn from_config_with(
    v: &Validated,
    notes: Option<GaleraNotes>,
) -> Result<Vec<Arc<dyn Probe>>, ConfigError> {
    let cfg = &v.config;
    let me = v.node_id();
    let defaults = &cfg.probes;
    let mut probes: Vec<Arc<dyn Probe>> = Vec::new();
    let secret =
        |f: &Option<std::path::PathBuf>, key: &str| -> Result<Option<String>, ConfigError> {
            f.as_deref()
                .map(|p| config::read_secret(p, key))
                .transpose()
        };
    if let Some(r) = &cfg.redis {
        let password = secret(&r.password_file, "redis.password_file")?;
        let timing = r.effective_timing(defaults);
        for m in &v.members {
            if m.id != me && !r.cross_check {
                continue;
            }
            if let Some(addr) = m.redis_addr {
                probes.push(Arc::new(RedisProbe::new(
                    id(m.id, Service::Redis, ""),
                    addr,
                    r.username.clone(),
                    password.clone(),
                    timing,
                )));
            }
        }
    }
    if let Some(db) = &cfg.mariadb {
        let password = secret(&db.password_file, "mariadb.password_file")?;
        let timing = db.effective_timing(defaults);
        // The platform's auto-increment convention is checked only with `[galera]`.
        let increment = cfg
            .galera
            .as_ref()
            .map_or(0, |g| g.auto_increment_increment);
        for m in &v.members {
            let local = m.id == me;
            if !local && !db.cross_check {
                continue;
            }
            let target = match (local, &db.socket, m.mysql_addr) {
                (true, Some(sock), _) => MysqlTarget::Socket(sock.clone()),
                (_, _, Some(addr)) => MysqlTarget::Tcp(addr),
                _ => continue,
            };
            let mut probe = MariadbProbe::new(
                id(m.id, Service::Mariadb, ""),
                target,
                db.user.clone(),
                password.clone(),
                if local { db.datadir.clone() } else { None },
                timing,
            )
            .with_expected_increment(increment);
            if let (true, Some(n)) = (local, &notes) {
                probe = probe.with_notes(n.clone());
            }
            probes.push(Arc::new(probe));
        }
    }
    if let Some(f) = &cfg.phpfpm {
        let addr = config::parse_fcgi_addr(&f.address).map_err(|message| ConfigError::Invalid {
            file: v.file.clone(),
            key: "phpfpm.address".into(),
            message,
        })?;
        probes.push(Arc::new(
            PhpfpmProbe::new(
                id(me, Service::Phpfpm, ""),
                addr,
                f.ping_path.clone(),
                f.ping_response.clone(),
                f.status_path.clone(),
                f.timing.resolve(defaults),
            )
            .with_saturation(super::phpfpm_status::Saturation {
                queue_bound: f.queue_bound,
                queue_for: f.queue_for,
            }),
        ));
    }
    if let Some(g) = &cfg.gluster {
        probes.push(Arc::new(
            GlusterProbe::new(
                id(me, Service::Gluster, &g.volume),
                g.command.clone(),
                g.volume.clone(),
                g.bricks.clone(),
                g.local_brick.clone(),
                g.volume_timing(defaults),
            )
            .with_heal_unit(
                g.heal_unit
                    .as_ref()
                    .map(|unit| HelperUnit::new(unit, &cfg.node.data_dir)),
            ),
        ));
        for mount in &g.mounts {
            probes.push(Arc::new(MountProbe::new(
                id(me, Service::GlusterMount, &mount.display().to_string()),
                mount.clone(),
                &me.to_string(),
                g.mount_timing.resolve(defaults),
            )));
        }
    }
    probes.sort_by(|a, b| a.id().cmp(b.id()));
    Ok(probes)
}
