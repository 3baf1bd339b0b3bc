//! Who may see whose processes through the API.
//!
//! `/proc` mounted with `hidepid=` hides other users' processes from each user (but the
//! members of its `gid=` group and root). The daemon reads `/proc` with its own privileges,
//! so without this module it would tell any local user what `/proc` hides from them. When
//! the host's `/proc` hides processes, each connection's peer is identified (the Unix
//! socket's peer credentials, or the owner of the client's socket in `/proc/net/tcp` for a
//! loopback TCP connection) and a reader who is neither root nor in the exempt group sees
//! only the processes of their own uid ([`Viewer::Own`]).

use std::net::{IpAddr, SocketAddr};

use super::query::Viewer;

/// The policy for the whole daemon, decided at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Every reader sees every process (`/proc` hides nothing).
    Host,
    /// Readers see only their own processes, but root and the members of `exempt_gid`.
    Own { exempt_gid: Option<u32> },
}

impl Visibility {
    /// What the host's `/proc` (as this process's mount namespace has it) says.
    pub fn of_host() -> Visibility {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| from_mountinfo(&m))
            .unwrap_or(Visibility::Host)
    }

    /// What a reader whose uid is `uid` (`None`: unknown) may see.
    pub fn viewer(self, uid: Option<u32>) -> Viewer {
        match (self, uid) {
            (Visibility::Host, _) | (_, Some(0)) => Viewer::All,
            (Visibility::Own { exempt_gid }, Some(uid)) => {
                if exempt_gid.is_some_and(|gid| in_group(uid, gid)) {
                    Viewer::All
                } else {
                    Viewer::Own(uid)
                }
            }
            // Nobody's processes: no uid is this.
            (Visibility::Own { .. }, None) => Viewer::Own(u32::MAX),
        }
    }
}

/// The policy `/proc`'s mount options give (`hidepid=1`, `2`, `invisible` or `noaccess`
/// hide; `gid=` exempts a group). Of several mounts on `/proc`, the last (the one on top,
/// which paths resolve to) counts.
fn from_mountinfo(mountinfo: &str) -> Visibility {
    let mut found = Visibility::Host;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.get(4) != Some(&"/proc") || fields.get(sep + 1) != Some(&"proc") {
            continue;
        }
        let options = fields.get(sep + 3).copied().unwrap_or("");
        let option = |name: &str| {
            options
                .split(',')
                .find_map(|o| o.strip_prefix(name)?.strip_prefix('='))
        };
        let hides = option("hidepid").is_some_and(|v| !matches!(v, "0" | "off"));
        found = if hides {
            Visibility::Own {
                exempt_gid: option("gid").and_then(|g| g.parse().ok()),
            }
        } else {
            Visibility::Host
        };
    }
    found
}

/// Whether `uid` is in group `gid`: as its primary group (`/etc/passwd`) or a
/// supplementary one (`/etc/group`).
fn in_group(uid: u32, gid: u32) -> bool {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let Some((name, primary)) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let primary = f.get(3).and_then(|g| g.parse::<u32>().ok());
        (f.get(2)?.parse::<u32>().ok()? == uid).then(|| (f[0].to_string(), primary))
    }) else {
        return false;
    };
    if primary == Some(gid) {
        return true;
    }
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    groups.lines().any(|l| {
        let f: Vec<&str> = l.split(':').collect();
        f.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(gid)
            && f.get(3)
                .is_some_and(|members| members.split(',').any(|m| m == name))
    })
}

/// The owner of the loopback TCP socket at `peer` connected to us at `ours` (the client's
/// end of an accepted connection), from `/proc/net/tcp` or `tcp6`: the row must have both
/// ends, be established and have a socket behind it. A socket in TIME_WAIT shows uid 0
/// and inode 0, and a client could reuse its address: such rows are no one.
pub fn tcp_peer_uid(peer: SocketAddr, ours: SocketAddr) -> Option<u32> {
    let hex = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => hex_v4(ip.octets(), a.port()),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => hex_v4(v4.octets(), a.port()),
            None => hex_v6(ip.octets(), a.port()),
        },
    };
    let (local, remote) = (hex(peer), hex(ours));
    // A v4 client of a v6 listener shows in tcp as v4 (hex above maps it back).
    let table = if local.len() > 13 {
        "/proc/net/tcp6"
    } else {
        "/proc/net/tcp"
    };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let matches = f.get(1)?.eq_ignore_ascii_case(&local)
            && f.get(2)?.eq_ignore_ascii_case(&remote)
            && *f.get(3)? == "01"
            && *f.get(9)? != "0";
        matches.then(|| f.get(7)?.parse().ok())?
    })
}

/// `/proc/net/tcp`'s form of an address: the IPv4 address as a native-endian u32 in hex.
fn hex_v4(octets: [u8; 4], port: u16) -> String {
    format!("{:08X}:{port:04X}", u32::from_ne_bytes(octets))
}

/// `/proc/net/tcp6`'s form: four native-endian u32 words in hex.
fn hex_v6(octets: [u8; 16], port: u16) -> String {
    let mut s = String::with_capacity(37);
    for w in octets.chunks(4) {
        let word = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
        s.push_str(&format!("{word:08X}"));
    }
    format!("{s}:{port:04X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidepid_in_proc_mount_options_makes_readers_see_their_own() {
        let plain = "22 26 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n";
        assert_eq!(from_mountinfo(plain), Visibility::Host);
        let hidden = "22 26 0:21 / /proc rw,relatime - proc proc rw,hidepid=invisible,gid=1234\n";
        assert_eq!(
            from_mountinfo(hidden),
            Visibility::Own {
                exempt_gid: Some(1234)
            }
        );
        let off = "22 26 0:21 / /proc rw - proc proc rw,hidepid=0\n";
        assert_eq!(from_mountinfo(off), Visibility::Host);
        let elsewhere = "40 26 0:21 / /srv/x/proc rw - proc proc rw,hidepid=2\n";
        assert_eq!(from_mountinfo(elsewhere), Visibility::Host);
        // A private mount on top of the host's: the one on top counts.
        let stacked = format!("{plain}{hidden}");
        assert!(matches!(from_mountinfo(&stacked), Visibility::Own { .. }));
        let own = Visibility::Own { exempt_gid: None };
        assert_eq!(own.viewer(Some(0)), Viewer::All);
        assert_eq!(own.viewer(Some(1000)), Viewer::Own(1000));
        assert_eq!(own.viewer(None), Viewer::Own(u32::MAX));
        assert_eq!(Visibility::Host.viewer(Some(1000)), Viewer::All);
    }

    /// Our own connection to a loopback listener is found in /proc/net/tcp as ours.
    #[test]
    fn a_loopback_clients_uid_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let ours = server_side.local_addr().unwrap();
        let me = sprof_perf::sys::euid();
        assert_eq!(tcp_peer_uid(peer, ours), Some(me));
        // The same client address towards another end is no one.
        let elsewhere = SocketAddr::new(ours.ip(), ours.port().wrapping_add(1));
        assert_eq!(tcp_peer_uid(peer, elsewhere), None);
    }
}
