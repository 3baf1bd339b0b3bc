//! Inputs and identities for the hostile-local-user tests: an unprivileged user to run
//! attacker programs as, and crafted files (see shared/reviews/redteam-50a07a6.md).

use std::process::Command;

/// The unprivileged user the hostile tests run attacker programs as.
pub const USER: &str = "sprofd-rt";

/// The uid and gid of [`USER`], created (without a home) if missing. `None` when it cannot
/// be (not root): the caller's `live` gate has already said why such tests need root.
pub fn user() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(USER).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        // Another test may create it at the same time: its failure is fine if the user exists.
        let _ = Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", USER])
            .output();
    }
    Some((id("-u")?, id("-g")?))
}

/// `program args…` to be run as [`USER`], with no supplementary groups and no capabilities.
pub fn as_user(program: &std::path::Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={USER}"),
        &format!("--regid={USER}"),
        "--clear-groups",
        "--inh-caps=-all",
        "--",
    ])
    .arg(program);
    cmd
}

/// `.debug_info` and `.debug_abbrev` of one unit whose function `hot` (at `low`, `size`
/// bytes) holds `depth` nested inlined subroutines: the red-team review's D1 input.
pub fn deep_dwarf(depth: usize, low: u64, size: u64) -> (Vec<u8>, Vec<u8>) {
    // Abbrev 1: compile unit (name, low_pc, high_pc as length), children. 2: subprogram,
    // same attributes. 3: inlined subroutine (low_pc, high_pc), children.
    let abbrev = vec![
        1, 0x11, 1, 0x03, 0x08, 0x11, 0x01, 0x12, 0x07, 0, 0, //
        2, 0x2e, 1, 0x03, 0x08, 0x11, 0x01, 0x12, 0x07, 0, 0, //
        3, 0x1d, 1, 0x11, 0x01, 0x12, 0x07, 0, 0, 0,
    ];
    let mut body = vec![1];
    body.extend_from_slice(b"deep.c\0");
    body.extend_from_slice(&low.to_le_bytes());
    body.extend_from_slice(&size.to_le_bytes());
    body.push(2);
    body.extend_from_slice(b"hot\0");
    body.extend_from_slice(&low.to_le_bytes());
    body.extend_from_slice(&size.to_le_bytes());
    for _ in 0..depth {
        body.push(3);
        body.extend_from_slice(&low.to_le_bytes());
        body.extend_from_slice(&size.to_le_bytes());
    }
    body.resize(body.len() + depth + 2, 0);
    // DWARF 4 header: version, abbrev offset 0, address size 8.
    let mut header = vec![4, 0, 0, 0, 0, 0, 8];
    header.extend_from_slice(&body);
    let mut info = u32::try_from(header.len())
        .expect("small")
        .to_le_bytes()
        .to_vec();
    info.extend_from_slice(&header);
    (info, abbrev)
}
