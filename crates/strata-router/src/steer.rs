//! Which PoP answers a client: the nearest healthy one for the client's location, with
//! per-PoP weights for gradual migration. No IO; health is passed in.
//!
//! 1. Rank the PoPs by latency from the location (PoPs it does not list: `unlisted`),
//!    a degraded PoP's latency raised by `degraded_penalty`, unhealthy PoPs left out.
//! 2. Walk the ranking: a PoP of weight `w` takes a client when the client's draw for it
//!    (a hash of the client subnet and the PoP name, 0-99) is under `w`; otherwise the
//!    client goes on to the next PoP. So a new PoP at weight 5 takes 5% of the subnets it
//!    is nearest to, and each subnet sticks to its PoP between queries (warm caches).
//! 3. Every PoP down: answer by latency alone (fail open). An answer is better than none:
//!    the health view may be wrong, and a resolver would otherwise retry elsewhere.

use strata_health::NodeState;

#[derive(Debug, Clone)]
pub struct Pop {
    pub name: String,
    pub addresses: Vec<std::net::IpAddr>,
    pub weight: u8,
}

#[derive(Debug, Clone)]
pub struct Steering {
    pub pops: Vec<Pop>,
    /// Per location, latency to each PoP (index as `pops`), ms.
    pub latency: Vec<Vec<u32>>,
    /// Location of clients no prefix matched.
    pub default_location: Option<usize>,
    pub degraded_penalty: u32,
}

/// The decision for one question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub pop: usize,
    /// A weight decided it: the answer depends on the client's subnet, not only its location.
    pub weighted: bool,
    /// Every PoP was unhealthy: chosen by latency alone.
    pub fail_open: bool,
}

impl Steering {
    /// `client`: a stable key for the client's subnet; `health(pop index)`.
    pub fn choose(
        &self,
        location: Option<usize>,
        client: &[u8],
        health: impl Fn(usize) -> NodeState,
    ) -> Option<Choice> {
        let location = location.or(self.default_location);
        let latency = |p: usize| -> u64 {
            location
                .and_then(|l| self.latency.get(l))
                .and_then(|row| row.get(p))
                .copied()
                .unwrap_or(0) as u64
        };
        let mut ranked: Vec<(u64, usize)> = (0..self.pops.len())
            .filter_map(|p| match health(p) {
                NodeState::Healthy => Some((latency(p), p)),
                NodeState::Degraded => Some((latency(p) + self.degraded_penalty as u64, p)),
                NodeState::Unhealthy => None,
            })
            .collect();
        let fail_open = ranked.is_empty();
        if fail_open {
            ranked = (0..self.pops.len()).map(|p| (latency(p), p)).collect();
        }
        ranked.sort_unstable();
        let mut weighted = false;
        for &(_, p) in &ranked {
            let w = self.pops[p].weight;
            if w >= 100 {
                return Some(Choice {
                    pop: p,
                    weighted,
                    fail_open,
                });
            }
            weighted = true;
            if w > 0 && draw(client, &self.pops[p].name) < u64::from(w) {
                return Some(Choice {
                    pop: p,
                    weighted,
                    fail_open,
                });
            }
        }
        // Every PoP in reach is partly weighted and none drew this client: the nearest
        // one with any weight (0 means drained), else the nearest.
        let pop = ranked
            .iter()
            .find(|(_, p)| self.pops[*p].weight > 0)
            .or(ranked.first())?
            .1;
        Some(Choice {
            pop,
            weighted,
            fail_open,
        })
    }
}

/// The client's draw for a PoP, 0..100.
fn draw(client: &[u8], pop: &str) -> u64 {
    let seed = xxhash_rust::xxh64::xxh64(pop.as_bytes(), 0);
    xxhash_rust::xxh64::xxh64(client, seed) % 100
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeState::*;

    fn pops(weights: &[u8]) -> Vec<Pop> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Pop {
                name: format!("p{i}"),
                addresses: vec![],
                weight: w,
            })
            .collect()
    }

    /// One location; PoP i at latency 10 * (i + 1).
    fn steering(weights: &[u8]) -> Steering {
        Steering {
            pops: pops(weights),
            latency: vec![(0..weights.len() as u32).map(|i| 10 * (i + 1)).collect()],
            default_location: Some(0),
            degraded_penalty: 50,
        }
    }

    fn pick(s: &Steering, client: u32, health: &[NodeState]) -> Choice {
        s.choose(Some(0), &client.to_be_bytes(), |p| health[p])
            .unwrap()
    }

    #[test]
    fn the_nearest_healthy_pop_answers() {
        let s = steering(&[100, 100, 100]);
        assert_eq!(pick(&s, 1, &[Healthy, Healthy, Healthy]).pop, 0);
        assert_eq!(pick(&s, 1, &[Unhealthy, Healthy, Healthy]).pop, 1);
        assert_eq!(pick(&s, 1, &[Unhealthy, Unhealthy, Healthy]).pop, 2);
    }

    #[test]
    fn a_degraded_pop_keeps_its_clients_unless_a_healthy_one_is_nearly_as_close() {
        let s = steering(&[100, 100]);
        // 10 + 50 > 20: the healthy neighbour is close enough.
        assert_eq!(pick(&s, 1, &[Degraded, Healthy]).pop, 1);
        let far = Steering {
            latency: vec![vec![10, 100]],
            ..steering(&[100, 100])
        };
        assert_eq!(pick(&far, 1, &[Degraded, Healthy]).pop, 0);
    }

    #[test]
    fn every_pop_down_fails_open_to_the_nearest() {
        let s = steering(&[100, 100]);
        let c = pick(&s, 1, &[Unhealthy, Unhealthy]);
        assert_eq!((c.pop, c.fail_open), (0, true));
    }

    #[test]
    fn a_pop_at_weight_w_takes_about_w_percent_of_its_clients() {
        for w in [5u8, 25, 50] {
            let s = steering(&[w, 100]);
            let n = 20_000;
            let taken = (0..n)
                .filter(|c| pick(&s, *c, &[Healthy, Healthy]).pop == 0)
                .count();
            let share = taken as f64 / n as f64 * 100.0;
            // Binomial sd at n = 20k is under 0.4 points; allow 1.5.
            assert!((share - w as f64).abs() < 1.5, "weight {w}: {share:.2}%");
        }
    }

    #[test]
    fn a_client_sticks_to_its_pop_and_weight_zero_drains() {
        let s = steering(&[50, 100]);
        for c in 0..100 {
            let first = pick(&s, c, &[Healthy, Healthy]);
            assert!(first.weighted);
            assert_eq!(pick(&s, c, &[Healthy, Healthy]), first);
        }
        let drained = steering(&[0, 100]);
        assert!((0..1000).all(|c| pick(&drained, c, &[Healthy, Healthy]).pop == 1));
    }

    #[test]
    fn raising_a_weight_only_moves_clients_towards_the_pop() {
        // 5% -> 25%: every client already on the new PoP stays there.
        let (low, high) = (steering(&[5, 100]), steering(&[25, 100]));
        for c in 0..5000 {
            if pick(&low, c, &[Healthy, Healthy]).pop == 0 {
                assert_eq!(pick(&high, c, &[Healthy, Healthy]).pop, 0);
            }
        }
    }
}
