//! sd_notify: READY, STATUS, WATCHDOG and STOPPING for `Type=notify` units, through the
//! `sd-notify` crate; nothing is sent when `NOTIFY_SOCKET` is unset (not under systemd).

use std::time::Duration;

use sd_notify::NotifyState;

pub struct Notifier {
    enabled: bool,
    /// Half the watchdog timeout, when systemd asked for pings.
    watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        // systemd sets WATCHDOG_PID too; when it is set, it must name us (a child that
        // inherited the environment must not ping for its parent).
        let pid_ok = std::env::var("WATCHDOG_PID").map_or(true, |p| {
            p.trim().parse::<u32>().ok() == Some(std::process::id())
        });
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| enabled && pid_ok && u > 0)
            .map(|u| Duration::from_micros(u / 2));
        Notifier { enabled, watchdog }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if self.enabled {
            // A lost notification is systemd's to time out on; nothing to do here.
            let _ = sd_notify::notify(false, states);
        }
    }

    /// Sampling runs and the API listens.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn stopping(&self) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: writing the window in progress"),
        ]);
    }

    /// How often [`Notifier::watchdog`] must be called (an hour when systemd does not ask).
    pub fn watchdog_interval(&self) -> Duration {
        self.watchdog.unwrap_or(Duration::from_secs(3600))
    }

    /// Pinged from the sampling loop, so a hung loop stops the pings and systemd restarts us.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }
}
