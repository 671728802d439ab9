//! Graceful shutdown: one trigger, many listeners (mini-redis style).
//!
//! Tasks check [`Shutdown::is_triggered`] between units of work and `select!` on
//! [`Shutdown::wait`] only while idle, so a batch in flight is always finished and committed.

use tokio::sync::watch;

/// Fires shutdown for every [`Shutdown`] made from it.
#[derive(Debug, Clone)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

/// A listener for shutdown.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// A new trigger and its first listener.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown is triggered (at once if it already was).
    pub async fn wait(&mut self) {
        // An error means every trigger is gone, which also means nobody can keep us running.
        let _closed = self.rx.wait_for(|v| *v).await;
    }
}

/// Resolves on SIGTERM or SIGINT.
///
/// # Errors
/// The signal handlers cannot be installed.
pub async fn signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("ctrl-c")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_sees_the_trigger() {
        let (t, mut a) = channel();
        let mut b = a.clone();
        assert!(!a.is_triggered());
        t.trigger();
        a.wait().await;
        b.wait().await;
        assert!(b.is_triggered());
    }
}
