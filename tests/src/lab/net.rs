//! The lab network: one bridge, one namespace per node, a veth pair into each, and cuts.
//!
//! Layout: bridge `trlab0` holds the host-side address 10.77.0.1/24 (so the host reaches the
//! agents' APIs and the web frontends); namespace `haN` has `eth0` = 10.77.0.1N/24 and `lo`.
//! There is no default route and no forwarding, so nothing leaves the bridge.
//!
//! Cuts (`partition`) are nftables rules in the cut node's own namespace, in one table
//! `inet triad_lab`: input drops by source address, output by destination. Only the peers'
//! addresses are dropped, never the host's, so the host can still watch a cut node (its
//! agent's view, its Galera state). `heal` deletes the table in every node. The kernel has
//! no netem here, so there is no latency injection.
//!
//! Caveat: a cut through nftables leaves established TCP connections half-open; Redis
//! replication, for one, resumes only seconds after a heal (retransmit backoff).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::process::{self, in_netns, netns_inode, run, run_ok};
use super::spec::LabSpec;
use super::state::Cut;

const IP_TIMEOUT: Duration = Duration::from_secs(5);

/// nftables table holding a node's cuts.
pub const NFT_TABLE: &str = "triad_lab";

fn ip(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run_ok(&mut cmd, None, IP_TIMEOUT).map(|_| ())
}

/// Whether the bridge exists.
pub fn bridge_exists(lab: &LabSpec) -> bool {
    std::path::Path::new("/sys/class/net")
        .join(&lab.bridge)
        .exists()
}

/// Whether a host-side link named `name` exists.
pub fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Whether node `n`'s namespace exists.
pub fn netns_exists(lab: &LabSpec, n: u64) -> bool {
    netns_inode(&lab.netns(n)).is_some()
}

/// Creates the bridge, the namespaces and the veth pairs, with addresses, all links up.
pub fn create(lab: &LabSpec) -> Result<()> {
    let br = lab.bridge.as_str();
    let host_cidr = format!("{}/{}", lab.host_ip(), lab.prefix_len());
    ip(&["link", "add", br, "type", "bridge"]).with_context(|| {
        format!("cannot create bridge {br} (does a stale one exist? `tests/lab down`)")
    })?;
    ip(&["addr", "add", &host_cidr, "dev", br])?;
    ip(&["link", "set", br, "up"])?;
    for n in lab.nodes() {
        let ns = lab.netns(n);
        let veth = lab.veth(n);
        let cidr = format!("{}/{}", lab.node_ip(n), lab.prefix_len());
        ip(&["netns", "add", &ns])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &veth, "master", br, "up"])?;
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    }
    Ok(())
}

/// Deletes namespaces (their veth ends go with them), stray veths and the bridge. Run it
/// after every process inside has stopped. Returns what could not be removed.
pub fn destroy(lab: &LabSpec) -> Vec<String> {
    let mut problems = Vec::new();
    for n in lab.nodes() {
        let ns = lab.netns(n);
        if netns_exists(lab, n) {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                problems.push(format!("netns {ns}: {e:#}"));
            }
        }
        // The kernel removes a deleted namespace's veth pair asynchronously: it may vanish
        // between the check and the delete, which is not a problem.
        let veth = lab.veth(n);
        if link_exists(&veth) {
            if let Err(e) = ip(&["link", "del", &veth]) {
                if link_exists(&veth) {
                    problems.push(format!("link {veth}: {e:#}"));
                }
            }
        }
    }
    if bridge_exists(lab) {
        if let Err(e) = ip(&["link", "del", &lab.bridge]) {
            problems.push(format!("bridge {}: {e:#}", lab.bridge));
        }
    }
    problems
}

/// The nftables rules (inside the cut node) that implement `cut`.
pub fn cut_rules(lab: &LabSpec, cut: &Cut) -> Vec<String> {
    let peers: Vec<u64> = match cut.from {
        Some(p) => vec![p],
        None => lab.nodes().into_iter().filter(|&p| p != cut.node).collect(),
    };
    let mut rules = Vec::new();
    for p in peers {
        let addr = lab.node_ip(p);
        rules.push(format!(
            "add rule inet {NFT_TABLE} input iifname \"eth0\" ip saddr {addr} drop"
        ));
        if !cut.oneway {
            rules.push(format!(
                "add rule inet {NFT_TABLE} output oifname \"eth0\" ip daddr {addr} drop"
            ));
        }
    }
    rules
}

/// Adds `cut` to its node's firewall (creating the table and chains on first use).
pub fn apply_cut(lab: &LabSpec, cut: &Cut) -> Result<()> {
    let mut script = format!(
        "add table inet {NFT_TABLE}\n\
         add chain inet {NFT_TABLE} input {{ type filter hook input priority 0; policy accept; }}\n\
         add chain inet {NFT_TABLE} output {{ type filter hook output priority 0; policy accept; }}\n"
    );
    for rule in cut_rules(lab, cut) {
        script.push_str(&rule);
        script.push('\n');
    }
    let mut cmd = in_netns(&lab.netns(cut.node), "nft");
    cmd.args(["-f", "-"]);
    run_ok(&mut cmd, Some(&script), IP_TIMEOUT)
        .with_context(|| format!("cannot apply the cut `{cut}`"))?;
    Ok(())
}

/// Deletes the cut table in every node that has one. Returns the nodes healed.
pub fn heal_all(lab: &LabSpec) -> Result<Vec<u64>> {
    let mut healed = Vec::new();
    for n in lab.nodes() {
        if !netns_exists(lab, n) {
            continue;
        }
        let mut list = in_netns(&lab.netns(n), "nft");
        list.args(["list", "table", "inet", NFT_TABLE]);
        if !run(&mut list, None, IP_TIMEOUT)?.success() {
            continue;
        }
        let mut del = in_netns(&lab.netns(n), "nft");
        del.args(["delete", "table", "inet", NFT_TABLE]);
        run_ok(&mut del, None, IP_TIMEOUT)
            .with_context(|| format!("cannot delete the cut table in {}", lab.netns(n)))?;
        healed.push(n);
    }
    Ok(healed)
}

/// Whether a TCP connection from inside node `from` to `addr` opens within `timeout`
/// (bash's `/dev/tcp`; the lab has no `ping`).
pub fn tcp_reachable(
    lab: &LabSpec,
    from: u64,
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> Result<bool> {
    let mut cmd = in_netns(&lab.netns(from), "bash");
    cmd.args([
        "-c",
        &format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port()),
    ]);
    let out = process::run(&mut cmd, None, timeout)?;
    Ok(out.success())
}

/// Whether a UDP datagram sent from inside node `from` reaches a listener inside node `to`
/// within `timeout`: one-way cuts show here (TCP needs both directions).
pub fn udp_delivered(lab: &LabSpec, from: u64, to: u64, timeout: Duration) -> Result<bool> {
    const PORT: u16 = 7999;
    let token = format!("triad-lab-{from}-{to}-{}", std::process::id());
    let mut listen = in_netns(&lab.netns(to), "socat");
    listen.args([
        "-u",
        &format!("UDP4-RECV:{PORT},bind={}", lab.node_ip(to)),
        "STDOUT",
    ]);
    process::clear_signal_mask(&mut listen);
    listen.env("PATH", process::child_path());
    listen
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .stdin(std::process::Stdio::null());
    let mut child = listen
        .spawn()
        .context("cannot run socat (install it with tests/install-packages.sh)")?;
    let deadline = std::time::Instant::now() + timeout;
    // Send a datagram every 100 ms until the listener got one or the time is up.
    let got = (|| -> Result<bool> {
        let mut stdout = child.stdout.take().context("socat has no stdout")?;
        let reader = std::thread::spawn(move || {
            use std::io::Read as _;
            let mut buf = [0u8; 256];
            stdout
                .read(&mut buf)
                .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        });
        while std::time::Instant::now() < deadline {
            let mut send = in_netns(&lab.netns(from), "bash");
            send.args([
                "-c",
                &format!("echo {token} > /dev/udp/{}/{PORT}", lab.node_ip(to)),
            ]);
            let _ = process::run(&mut send, None, Duration::from_secs(2))?;
            std::thread::sleep(Duration::from_millis(100));
            if reader.is_finished() {
                break;
            }
        }
        let done = reader.is_finished();
        let _ = child.kill();
        let _ = child.wait();
        if !done {
            return Ok(false);
        }
        let text = reader
            .join()
            .map_err(|_| anyhow::anyhow!("socat reader panicked"))?
            .unwrap_or_default();
        Ok(text.contains(&token))
    })();
    let _ = child.kill();
    let _ = child.wait();
    got
}
