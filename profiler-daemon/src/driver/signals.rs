//! The signals a command-line session answers: Ctrl-C and SIGTERM stop it (a second Ctrl-C
//! aborts at once), SIGUSR1 asks for the outputs now (`--dump-every`'s on-demand dump).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::StopReason;

/// Signals received, counted by signal-hook's handlers.
pub struct Signals {
    interrupt: Arc<AtomicUsize>,
    terminate: Arc<AtomicUsize>,
    dump: Arc<AtomicUsize>,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
        let interrupt = Arc::new(AtomicUsize::new(0));
        let i = interrupt.clone();
        // SAFETY: the handler performs an atomic increment and, on the second Ctrl-C, exits
        // with _exit: both are async-signal-safe. The first Ctrl-C asks for a clean stop.
        unsafe {
            signal_hook::low_level::register(SIGINT, move || {
                if i.fetch_add(1, Ordering::SeqCst) >= 1 {
                    signal_hook::low_level::exit(130);
                }
            })
        }?;
        let terminate = Arc::new(AtomicUsize::new(0));
        signal_hook::flag::register_usize(SIGTERM, terminate.clone(), 1)?;
        let dump = Arc::new(AtomicUsize::new(0));
        signal_hook::flag::register_usize(SIGUSR1, dump.clone(), 1)?;
        Ok(Signals {
            interrupt,
            terminate,
            dump,
        })
    }

    /// Whether SIGUSR1 arrived since the last call.
    pub fn take_dump_request(&self) -> bool {
        self.dump.swap(0, Ordering::SeqCst) > 0
    }

    /// Why to stop, if a signal says so.
    pub fn stop_reason(&self) -> Option<StopReason> {
        if self.interrupt.load(Ordering::SeqCst) > 0 {
            Some(StopReason::Interrupted)
        } else if self.terminate.load(Ordering::SeqCst) > 0 {
            Some(StopReason::Terminated)
        } else {
            None
        }
    }
}
