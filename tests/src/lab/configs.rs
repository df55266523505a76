//! Daemon configurations of a lab node, generated from the [`LabSpec`], and the PHP page.
//!
//! Each template keeps the settings that made the lab reliable and fast; the comments next to
//! them say why. Defaults that matter (and bit us):
//! - MariaDB: `wsrep_auto_increment_control=OFF`, or Galera rewrites the fixed increment 3 and
//!   the per-node offsets; no `user=` under `[client]` (it breaks rsync/mariabackup SST).
//! - Redis: `repl-diskless-sync-delay 0` (the default 5 s delays every replica's first link);
//!   `repl-ping-replica-period 1`, so that an idle master's pings move its replicas' offsets
//!   well within the agent's `failover.link_stale_after` (2 s); `min-replicas-to-write
//!   1000`: every Redis boots fenced and its agent unfences it once it knows who the master is
//!   (the recommended production setting).
//! - PHP-FPM: `user = www-data` (root workers refuse to start, and `php-fpm -t` does not
//!   notice).
//! - HAProxy 2.6: `no option keep-conn` in the `fcgi-app` (idle kept connections each pin a
//!   pool worker and new requests hang); the server-state file exists with the single line `1`
//!   (missing: "can't open", empty: "can't get version"); redis2/redis3 and db2/db3 start
//!   `disabled`, which leaves admin_state bit 0x04 set for good, so read admin_state as a
//!   bitmask.

use std::fmt::Write as _;

use super::spec::{
    LabSpec, AGENT_API_PORT, HAPROXY_CHECK_USER, HAPROXY_MYSQL_PORT, HAPROXY_MYSQL_RECIPE_PORT,
    HAPROXY_REDIS_PORT, HAPROXY_WEB_PORT, MONITOR_USER, MYSQL_PORT, PHPFPM_PORT, REDIS_PORT,
    SHOP_DB, SHOP_USER,
};

/// The lab's generated passwords.
#[derive(Clone, Debug)]
pub struct Secrets {
    /// Password of the shop application user.
    pub shop: String,
    /// Password of the agent's monitoring user.
    pub monitor: String,
    /// Password of the backup user.
    pub backup: String,
    /// Password of the restic repository.
    pub restic: String,
    /// The agents' API bearer token.
    pub api_token: String,
    /// Password of the agents' Redis ACL user (`triad`).
    pub redis: String,
}

/// The shipped Redis example: the lab's servers get its ACL user line, so the agents run with
/// exactly the rights an operator gives them.
const REDIS_EXAMPLE: &str = include_str!("../../../systemd/redis.conf.example");

/// The example's `user triad ...` line, with `password` in place of its hash.
pub fn triad_acl_line(password: &str) -> String {
    REDIS_EXAMPLE
        .lines()
        .find(|l| l.starts_with("user triad "))
        .map(|l| l.replace("#PASSWORD-SHA256", &format!(">{password}")))
        .unwrap_or_else(|| "# systemd/redis.conf.example has no `user triad` line".into())
}

/// `my.cnf` of node `n` (server and client sections; pass it with `--defaults-file`).
///
/// `evs.join_retrans_period=PT0.1S` and `evs.keepalive_period=PT0.1S` are what the README asks
/// of production: Galera installs a new view (a member evicted, or a restarted one joining)
/// only at the next JOIN retransmission or keepalive of every member, the joiner's included,
/// and with the defaults of `PT1S` every commit stalls about a second each time. Each agent
/// also sets them at runtime (`galera.join_retrans_period`, `galera.keepalive_period`), but a
/// starting process joins with this file's values.
pub fn my_cnf(lab: &LabSpec, n: u64) -> String {
    let ip = lab.node_ip(n);
    let cluster: Vec<String> = lab
        .nodes()
        .iter()
        .map(|&p| lab.node_ip(p).to_string())
        .collect();
    format!(
        "[client]\n\
         socket={socket}\n\
         [mariadbd]\n\
         user=mysql\n\
         datadir={datadir}\n\
         socket={socket}\n\
         pid-file={pidfile}\n\
         log-error={log}\n\
         bind-address={ip}\n\
         port={MYSQL_PORT}\n\
         skip-name-resolve\n\
         performance_schema=OFF\n\
         innodb_buffer_pool_size=64M\n\
         innodb_log_file_size=16M\n\
         innodb_flush_log_at_trx_commit=2\n\
         binlog_format=ROW\n\
         default_storage_engine=InnoDB\n\
         innodb_autoinc_lock_mode=2\n\
         auto_increment_increment=3\n\
         auto_increment_offset={n}\n\
         wsrep_auto_increment_control=OFF\n\
         wsrep_on=ON\n\
         wsrep_provider=/usr/lib/galera/libgalera_smm.so\n\
         wsrep_provider_options=\"gcache.size=32M;evs.join_retrans_period=PT0.1S;evs.keepalive_period=PT0.1S\"\n\
         wsrep_cluster_name=triad-lab\n\
         wsrep_cluster_address=gcomm://{cluster}\n\
         wsrep_node_address={ip}\n\
         wsrep_node_name=ha{n}\n\
         wsrep_sst_method=rsync\n",
        socket = lab.mysql_socket(n).display(),
        datadir = lab.mysql_datadir(n).display(),
        pidfile = lab.mysql_pidfile(n).display(),
        log = lab.mysql_log(n).display(),
        cluster = cluster.join(","),
    )
}

/// SQL run once on the bootstrapped node: the shop database and table, and the users.
pub fn bootstrap_sql(lab: &LabSpec, secrets: &Secrets) -> String {
    let [a, b, c, _] = lab.host_ip().octets();
    let net = format!("{a}.{b}.{c}.%");
    format!(
        "CREATE DATABASE {SHOP_DB};\n\
         CREATE TABLE {SHOP_DB}.visits (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
           node VARCHAR(16) NOT NULL, hits BIGINT NOT NULL, \
           created TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)) ENGINE=InnoDB;\n\
         CREATE USER '{SHOP_USER}'@'%' IDENTIFIED BY '{shop}';\n\
         GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP, \
           CREATE TEMPORARY TABLES, LOCK TABLES ON {SHOP_DB}.* TO '{SHOP_USER}'@'%';\n\
         CREATE USER '{MONITOR_USER}'@'%' IDENTIFIED BY '{monitor}';\n\
         GRANT PROCESS, REPLICATION CLIENT ON *.* TO '{MONITOR_USER}'@'%';\n\
         CREATE USER '{backup_user}'@'localhost' IDENTIFIED BY '{backup}';\n\
         GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR, SELECT ON *.* \
           TO '{backup_user}'@'localhost';\n\
         CREATE USER '{HAPROXY_CHECK_USER}'@'{net}';\n",
        shop = secrets.shop,
        monitor = secrets.monitor,
        backup = secrets.backup,
        backup_user = super::spec::BACKUP_USER,
    )
}

/// `redis.conf` of node `n` (the same for every node; `up` makes n2 and n3 replicas of n1).
///
/// The default user stays open for the lab's own tools (replication, redis-cli, the shop
/// page); the agents authenticate as the example's ACL user `triad` with `password`.
pub fn redis_conf(lab: &LabSpec, n: u64, password: &str) -> String {
    let dir = lab.redis_dir(n);
    let out = format!(
        "bind {ip}\n\
         port {REDIS_PORT}\n\
         protected-mode no\n\
         daemonize no\n\
         unixsocket {socket}\n\
         unixsocketperm 700\n\
         pidfile {dir}/redis.pid\n\
         logfile {log}\n\
         dir {dir}\n\
         save \"\"\n\
         appendonly no\n\
         repl-diskless-sync-delay 0\n\
         repl-ping-replica-period 1\n\
         min-replicas-to-write 1000\n\
         {acl}\n",
        acl = triad_acl_line(password),
        ip = lab.node_ip(n),
        dir = dir.display(),
        log = lab.redis_log(n).display(),
        socket = lab.redis_socket(n).display(),
    );
    // No `replicaof`: a restarted server comes back as a fenced master and its agent gives it
    // its role (a restarted replica must not re-attach to a stale master). `up` sets the first
    // topology once, as an installer would.
    let _ = n;
    out
}

/// `php-fpm.conf` of node `n`: one static pool of two workers with ping and status pages.
pub fn phpfpm_conf(lab: &LabSpec, n: u64, secrets: &Secrets) -> String {
    let dir = lab.phpfpm_dir(n);
    let mut clients: Vec<String> = lab
        .nodes()
        .iter()
        .map(|&p| lab.node_ip(p).to_string())
        .collect();
    clients.push(lab.host_ip().to_string());
    format!(
        "[global]\n\
         pid = {dir}/php-fpm.pid\n\
         error_log = {log}\n\
         daemonize = no\n\
         [shop]\n\
         user = www-data\n\
         group = www-data\n\
         listen = {ip}:{PHPFPM_PORT}\n\
         listen.allowed_clients = {clients}\n\
         pm = static\n\
         pm.max_children = 2\n\
         ping.path = /ping\n\
         pm.status_path = /status\n\
         catch_workers_output = yes\n\
         clear_env = yes\n\
         env[TRIAD_NODE] = ha{n}\n\
         env[SHOP_DB_PASSWORD] = {shop}\n\
         php_admin_value[error_log] = {dir}/php-errors.log\n\
         php_admin_flag[log_errors] = on\n",
        dir = dir.display(),
        log = lab.phpfpm_log(n).display(),
        ip = lab.node_ip(n),
        clients = clients.join(","),
        shop = secrets.shop,
    )
}

/// `haproxy.cfg` of node `n`: Redis to the master only and MySQL to the committed Galera
/// writer only (both with a short connect timeout and `option redispatch 1`, so a connection
/// that hits the dead server is retried on the new one after 300 ms instead of three times one
/// second, and both checked against each server's own agent), the clustercheck-style MySQL
/// recipe on a second frontend for the benchmark's comparison, web to the local PHP-FPM pool
/// (the other two as backup), admin socket and state file.
pub fn haproxy_cfg(lab: &LabSpec, n: u64) -> String {
    let mut redis = String::new();
    let mut mysql = String::new();
    let mut recipe = String::new();
    for p in lab.nodes() {
        let ip = lab.node_ip(p);
        let disabled = if p == 1 { "" } else { " disabled" };
        let _ = writeln!(
            redis,
            "    server redis{p} {ip}:{REDIS_PORT} check port {AGENT_API_PORT} inter 300ms \
             fall 1 rise 1{disabled}"
        );
        let _ = writeln!(
            mysql,
            "    server db{p} {ip}:{MYSQL_PORT} check port {AGENT_API_PORT} inter 300ms \
             fall 1 rise 1{disabled}"
        );
        let backup = if p == 1 { "" } else { " backup" };
        let _ = writeln!(
            recipe,
            "    server db{p} {ip}:{MYSQL_PORT} check inter 2s fall 2 rise 1{backup}"
        );
    }
    // The local pool first, the others as backups: a page is served where it was asked for.
    // A connection the local pool refuses marks it down at once (`observe layer4`), so the
    // request's retry goes to a backup: before Triad drains a killed pool, HAProxy stops
    // sending to it on the first refusal rather than after its check's fall. A pool coming
    // back (or readmitted) is checked every 200 ms until it is up.
    let mut php = format!(
        "    server php{n} {}:{PHPFPM_PORT} proto fcgi check inter 2s fastinter 200ms \
         downinter 500ms observe layer4 error-limit 1 on-error mark-down\n",
        lab.node_ip(n)
    );
    for p in lab.nodes().into_iter().filter(|&p| p != n) {
        let _ = writeln!(
            php,
            "    server php{p} {}:{PHPFPM_PORT} proto fcgi check inter 2s fastinter 200ms \
             downinter 500ms backup",
            lab.node_ip(p)
        );
    }
    format!(
        "global\n\
         \x20   stats socket {admin} mode 600 level admin\n\
         \x20   server-state-file {state}\n\
         \x20   log stderr format iso local0 info\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   log global\n\
         \x20   option dontlognull\n\
         \x20   timeout connect 2s\n\
         \x20   timeout client 60s\n\
         \x20   timeout server 60s\n\
         \x20   timeout check 2s\n\
         \x20   load-server-state-from-file global\n\
         frontend fe_redis\n\
         \x20   bind 127.0.0.1:{HAPROXY_REDIS_PORT}\n\
         \x20   default_backend be_redis\n\
         backend be_redis\n\
         \x20   # HAProxy retries a refused connection (a dead master) only after min(timeout\n\
         \x20   # connect, 1s), then on the server ready by then (redispatch): keep it short.\n\
         \x20   # A connect on a LAN takes well under a millisecond.\n\
         \x20   timeout connect 50ms\n\
         \x20   option redispatch 1\n\
         \x20   # Each server is checked against its own agent: up only while that agent says\n\
         \x20   # its Redis may take writes, so a server whose agent says no, is dead or is cut\n\
         \x20   # off leaves this HAProxy even when the local agent is dead.\n\
         \x20   option httpchk\n\
         \x20   http-check send meth GET uri /redis/master\n\
         \x20   http-check expect status 200\n\
         \x20   timeout check 300ms\n\
         {redis}\
         frontend fe_mysql\n\
         \x20   bind 127.0.0.1:{HAPROXY_MYSQL_PORT}\n\
         \x20   default_backend be_mysql\n\
         backend be_mysql\n\
         \x20   # No `backup` servers: Triad's runtime state is the routing. Each agent sets the\n\
         \x20   # committed Galera writer's server ready and every other one maint (db2/db3\n\
         \x20   # start disabled until it does), and cuts the sessions of a server that leaves.\n\
         \x20   # Each server is also checked against its own agent, which answers 200 only while\n\
         \x20   # that node is the committed writer and its own fresh check says Synced and\n\
         \x20   # Primary: a writer that dies, desyncs or is cut off leaves this HAProxy within\n\
         \x20   # 300 ms even when the local agent is dead. A short connect timeout with\n\
         \x20   # redispatch retries a connection to a dead writer on the new one after 50 ms.\n\
         \x20   timeout connect 50ms\n\
         \x20   option redispatch 1\n\
         \x20   option httpchk\n\
         \x20   http-check send meth GET uri /galera/writer\n\
         \x20   http-check expect status 200\n\
         \x20   timeout check 300ms\n\
         {mysql}\
         frontend fe_mysql_recipe\n\
         \x20   bind 127.0.0.1:{HAPROXY_MYSQL_RECIPE_PORT}\n\
         \x20   default_backend be_mysql_recipe\n\
         backend be_mysql_recipe\n\
         \x20   # The common clustercheck-style recipe, for the Galera benchmark's comparison\n\
         \x20   # only; Triad does not manage it. One active writer, the others as backups in a\n\
         \x20   # fixed order, a check that only sees that mysqld answers a handshake.\n\
         \x20   option mysql-check user {HAPROXY_CHECK_USER} post-41\n\
         {recipe}\
         fcgi-app php\n\
         \x20   docroot {www}\n\
         \x20   index index.php\n\
         \x20   path-info ^(/.+\\.php)(/.*)?$\n\
         \x20   log-stderr global\n\
         \x20   # HAProxy 2.6 keeps FastCGI connections by default; each idle one pins a pool\n\
         \x20   # worker (two here), and new requests then hang.\n\
         \x20   no option keep-conn\n\
         frontend fe_web\n\
         \x20   mode http\n\
         \x20   bind 127.0.0.1:{HAPROXY_WEB_PORT}\n\
         \x20   bind {ip}:{HAPROXY_WEB_PORT}\n\
         \x20   default_backend be_php\n\
         backend be_php\n\
         \x20   mode http\n\
         \x20   use-fcgi-app php\n\
         \x20   # Triad keeps the servers on the committed web rotation (a `web-pool` backend): a\n\
         \x20   # sick pool is put in maintenance everywhere. A pool killed before that refuses:\n\
         \x20   # the request is retried on another server.\n\
         \x20   timeout connect 50ms\n\
         \x20   retries 2\n\
         \x20   option redispatch 1\n\
         \x20   option httpchk GET /ping\n\
         {php}",
        admin = lab.haproxy_admin_socket(n).display(),
        state = lab.haproxy_server_state(n).display(),
        www = lab.www_dir().display(),
        ip = lab.node_ip(n),
    )
}

/// Contents of the server-state file before the first dump: the version line alone.
pub const HAPROXY_SERVER_STATE_INIT: &str = "1\n";

/// The shop page: INCRs a Redis counter and INSERTs a row, both through the node's HAProxy,
/// and answers JSON (`node`, `hits`, `insert_id`, `db_node`), or 503 with `error`.
pub const INDEX_PHP: &str = r#"<?php
// Lab page: INCR a Redis counter and INSERT a row into MariaDB, both through the node's HAProxy.
header('Content-Type: application/json');
$node = getenv('TRIAD_NODE') ?: 'unknown';
$out = ['node' => $node];
$r = @stream_socket_client('tcp://127.0.0.1:6380', $en, $es, 2);
if (!$r) { http_response_code(503); echo json_encode($out + ['error' => "redis: $es"]), "\n"; exit; }
stream_set_timeout($r, 2);
// RESP by hand: PHP 8.2 on Debian has no redis extension by default.
fwrite($r, "*2\r\n\$4\r\nINCR\r\n\$4\r\nhits\r\n");
$line = fgets($r);
if ($line === false || $line[0] !== ':') { http_response_code(503); echo json_encode($out + ['error' => "redis reply: $line"]), "\n"; exit; }
$out['hits'] = (int)substr($line, 1);
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
try {
  $db = new mysqli('127.0.0.1', 'shop', getenv('SHOP_DB_PASSWORD'), 'shop', 3307);
  $st = $db->prepare('INSERT INTO visits (node, hits) VALUES (?, ?)');
  $st->bind_param('si', $node, $out['hits']);
  $st->execute();
  $out['insert_id'] = $db->insert_id;
  $out['db_node'] = $db->query('SELECT @@wsrep_node_name')->fetch_row()[0];
} catch (Throwable $e) { http_response_code(503); echo json_encode($out + ['error' => 'mysql: ' . $e->getMessage()]), "\n"; exit; }
echo json_encode($out), "\n";
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets {
            shop: "s".into(),
            monitor: "m".into(),
            backup: "b".into(),
            restic: "r".into(),
            api_token: "t".into(),
            redis: "r".into(),
        }
    }

    #[test]
    fn haproxy_routes_redis_to_node1_and_keeps_fcgi_connections_closed() {
        let cfg = haproxy_cfg(&LabSpec::new("/bin/true"), 2);
        assert!(cfg
            .contains("server redis1 10.77.0.11:6379 check port 7100 inter 300ms fall 1 rise 1\n"));
        assert!(cfg.contains(
            "server redis2 10.77.0.12:6379 check port 7100 inter 300ms fall 1 rise 1 disabled"
        ));
        assert!(cfg.contains("http-check send meth GET uri /redis/master\n"));
        assert!(cfg.contains("    no option keep-conn\n"));
        // The local pool is the active one.
        assert!(cfg.contains(
            "server php2 10.77.0.12:9000 proto fcgi check inter 2s fastinter 200ms downinter \
             500ms observe layer4 error-limit 1 on-error mark-down\n"
        ));
        assert!(cfg.contains("path-info ^(/.+\\.php)(/.*)?$\n"));
    }

    /// The lines of section `header` (`backend be_mysql`) of a generated config, header
    /// excluded, comments dropped.
    fn section<'a>(cfg: &'a str, header: &str) -> Vec<&'a str> {
        cfg.lines()
            .skip_while(|l| *l != header)
            .skip(1)
            .take_while(|l| l.starts_with(' '))
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn be_mysql_has_no_backups_and_checks_each_server_against_its_own_agent() {
        let cfg = haproxy_cfg(&LabSpec::new("/bin/true"), 3);
        let be = section(&cfg, "backend be_mysql");
        assert_eq!(
            be,
            [
                "timeout connect 50ms",
                "option redispatch 1",
                "option httpchk",
                "http-check send meth GET uri /galera/writer",
                "http-check expect status 200",
                "timeout check 300ms",
                "server db1 10.77.0.11:3306 check port 7100 inter 300ms fall 1 rise 1",
                "server db2 10.77.0.12:3306 check port 7100 inter 300ms fall 1 rise 1 disabled",
                "server db3 10.77.0.13:3306 check port 7100 inter 300ms fall 1 rise 1 disabled",
            ],
            "{cfg}"
        );
        assert!(!be.iter().any(|l| l.contains("backup")), "{be:?}");
        assert_eq!(
            section(&cfg, "frontend fe_mysql"),
            ["bind 127.0.0.1:3307", "default_backend be_mysql"]
        );
        // The reason is written next to it.
        assert!(cfg.contains("# No `backup` servers: Triad's runtime state is the routing."));
    }

    #[test]
    fn the_recipe_frontend_keeps_todays_clustercheck_style_backend() {
        let cfg = haproxy_cfg(&LabSpec::new("/bin/true"), 2);
        assert_eq!(
            section(&cfg, "frontend fe_mysql_recipe"),
            ["bind 127.0.0.1:3308", "default_backend be_mysql_recipe"]
        );
        assert_eq!(
            section(&cfg, "backend be_mysql_recipe"),
            [
                "option mysql-check user haproxy_check post-41",
                "server db1 10.77.0.11:3306 check inter 2s fall 2 rise 1",
                "server db2 10.77.0.12:3306 check inter 2s fall 2 rise 1 backup",
                "server db3 10.77.0.13:3306 check inter 2s fall 2 rise 1 backup",
            ]
        );
        // Only the recipe uses mysql-check.
        assert_eq!(cfg.matches("mysql-check").count(), 1, "{cfg}");
    }

    #[test]
    fn galera_keeps_the_fixed_increment_and_node_offset() {
        let cnf = my_cnf(&LabSpec::new("/bin/true"), 3);
        assert!(cnf.contains("auto_increment_increment=3\nauto_increment_offset=3\n"));
        assert!(cnf.contains("wsrep_auto_increment_control=OFF\n"));
        assert!(cnf.contains("gcomm://10.77.0.11,10.77.0.12,10.77.0.13\n"));
        let client = cnf.split("[mariadbd]").next().unwrap_or_default();
        assert!(!client.contains("user="), "{client}");
    }

    #[test]
    fn only_replicas_replicate() {
        let spec = LabSpec::new("/bin/true");
        assert!(!redis_conf(&spec, 1, "pw")
            .lines()
            .any(|l| l.starts_with("replicaof")));
        assert!(!redis_conf(&spec, 3, "pw")
            .lines()
            .any(|l| l.starts_with("replicaof")));
        assert!(redis_conf(&spec, 3, "pw").contains("min-replicas-to-write 1000\n"));
        assert!(redis_conf(&spec, 2, "pw").contains("repl-diskless-sync-delay 0\n"));
        // The agents' ACL user is the shipped example's, with the lab's password.
        let acl = triad_acl_line("pw");
        assert!(acl.starts_with("user triad on >pw "), "{acl}");
        assert!(
            acl.contains(" -@all ") && acl.contains("+replicaof"),
            "{acl}"
        );
        assert!(redis_conf(&spec, 2, "pw").contains(&format!("{acl}\n")));
    }

    #[test]
    fn users_are_least_privilege() {
        let sql = bootstrap_sql(&LabSpec::new("/bin/true"), &secrets());
        assert!(sql.contains("GRANT PROCESS, REPLICATION CLIENT ON *.* TO 'triad_monitor'@'%'"));
        assert!(
            sql.contains("CREATE USER 'haproxy_check'@'10.77.0.%';"),
            "{sql}"
        );
        assert!(sql.contains("TO 'triad_backup'@'localhost'"));
    }

    #[test]
    fn php_pool_runs_as_www_data_with_ping_and_status() {
        let conf = phpfpm_conf(&LabSpec::new("/bin/true"), 1, &secrets());
        assert!(conf.contains("user = www-data\n"));
        assert!(conf.contains("ping.path = /ping\npm.status_path = /status\n"));
        assert!(
            conf.contains("listen.allowed_clients = 10.77.0.11,10.77.0.12,10.77.0.13,10.77.0.1\n")
        );
    }
}
