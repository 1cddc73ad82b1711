//! A PoP's state from its nodes' states, and the snapshot the control plane publishes on
//! the bus after every probe round (the DNS router steers by it).
//!
//! - **unhealthy**: fewer than `min_up` (a share) of its nodes answer probes: what is left
//!   could not carry the PoP's traffic, so it leaves DNS answers.
//! - **degraded**: some node is degraded or unhealthy (less capacity, or trouble).
//! - **healthy**: every node is healthy.

use serde::{Deserialize, Serialize};

use crate::node::{Figures, NodeState};

/// One node as the monitor sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub node: String,
    pub state: NodeState,
    /// Why it is not healthy (empty when it is).
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub figures: Figures,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopHealth {
    pub pop: String,
    pub state: NodeState,
    /// When the PoP entered this state (ms since the Unix epoch, control plane's clock).
    pub since_ms: u64,
    pub nodes: Vec<NodeView>,
}

/// Every PoP's state after one probe round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthSnapshot {
    /// When the round ended (ms since the Unix epoch).
    pub at_ms: u64,
    /// The monitor's probe interval, so readers can tell a stale snapshot.
    pub interval_ms: u64,
    pub pops: Vec<PopHealth>,
}

impl HealthSnapshot {
    pub fn state_of(&self, pop: &str) -> Option<NodeState> {
        self.pops.iter().find(|p| p.pop == pop).map(|p| p.state)
    }
}

/// A PoP's state from its nodes' states; `min_up` is the share (0..=1) of nodes that must
/// answer probes for the PoP to stay in service.
pub fn pop_state(nodes: &[NodeState], min_up: f64) -> NodeState {
    if nodes.is_empty() {
        return NodeState::Unhealthy;
    }
    let up = nodes.iter().filter(|s| **s != NodeState::Unhealthy).count();
    if up == 0 || (up as f64) < min_up * nodes.len() as f64 {
        NodeState::Unhealthy
    } else if nodes.iter().all(|s| *s == NodeState::Healthy) {
        NodeState::Healthy
    } else {
        NodeState::Degraded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeState::*;

    #[test]
    fn a_pop_is_as_healthy_as_its_nodes_allow() {
        assert_eq!(pop_state(&[Healthy, Healthy], 0.5), Healthy);
        assert_eq!(pop_state(&[Healthy, Degraded], 0.5), Degraded);
        // Half the nodes still answer: degraded, still in service.
        assert_eq!(pop_state(&[Healthy, Unhealthy], 0.5), Degraded);
        assert_eq!(pop_state(&[Healthy, Unhealthy, Unhealthy], 0.5), Unhealthy);
        assert_eq!(pop_state(&[Unhealthy], 0.0), Unhealthy);
        assert_eq!(pop_state(&[], 0.5), Unhealthy);
    }

    #[test]
    fn snapshots_round_trip_as_json() {
        let s = HealthSnapshot {
            at_ms: 1,
            interval_ms: 1000,
            pops: vec![PopHealth {
                pop: "pop-a".into(),
                state: Degraded,
                since_ms: 1,
                nodes: vec![NodeView {
                    node: "a1".into(),
                    state: Unhealthy,
                    reason: "refused".into(),
                    figures: Figures::default(),
                }],
            }],
        };
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("\"state\":\"degraded\""), "{text}");
        assert_eq!(serde_json::from_str::<HealthSnapshot>(&text).unwrap(), s);
        assert_eq!(s.state_of("pop-a"), Some(Degraded));
    }
}
