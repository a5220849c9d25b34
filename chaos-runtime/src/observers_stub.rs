//! TEMPORARY stand-in until the aggregator lands in observe/mod.rs.
use crate::observe::{ObserveError, ObserverMode, SignalChoice, Sink, WatchedContainer};
/// Stand-in.
pub struct Observers;
impl Observers {
    /// Stand-in.
    pub async fn start(_m: ObserverMode, _d: testcontainers::bollard::Docker, _s: Sink) -> Result<Self, ObserveError> { Ok(Observers) }
    /// Stand-in.
    pub async fn watch(&self, _c: WatchedContainer) {}
    /// Stand-in.
    pub fn choices(&self) -> Vec<SignalChoice> { Vec::new() }
    /// Stand-in.
    pub async fn stop(self) {}
}
