//! The effective status of a backend: one pure function over every layer (design.md,
//! "Effective status on overwatch", highest rule first).
//!
//! The layers come from overwatch's own checks (validation), the agents' reports (gossip)
//! and operator overrides (Raft); `model::compute` gathers them per backend.

/// What DNS and the API make of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effective {
    /// In answers.
    Healthy,
    /// Out of answers: a check or a claim says it is down.
    Unhealthy,
    /// Out of answers: its agent went quiet and nothing else vouches for it.
    Stale,
    /// Out of answers: planned (drain or maint).
    Draining,
}

impl Effective {
    /// The API spelling.
    pub fn name(self) -> &'static str {
        match self {
            Effective::Healthy => "healthy",
            Effective::Unhealthy => "unhealthy",
            Effective::Stale => "stale",
            Effective::Draining => "draining",
        }
    }

    /// Whether DNS answers with it.
    pub fn in_rotation(self) -> bool {
        self == Effective::Healthy
    }
}

/// Overwatch's own check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    /// Checks are switched off: the configuration vouches for the server.
    Disabled,
    /// Configured, no result yet.
    Pending,
    /// Passing.
    Healthy,
    /// Failing, with the reason.
    Unhealthy(String),
}

/// What the backend's agent says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentClaim {
    /// Drain or maint requested by the host.
    pub draining: bool,
    /// Its local health checks pass.
    pub healthy: bool,
    /// Heard from within the stale threshold.
    pub fresh: bool,
    /// It announced its departure (a signed leaving report): out at once, like a drain.
    pub left: bool,
}

/// An operator's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Forced healthy (true) or unhealthy (false).
    pub healthy: bool,
    /// Why, as the operator wrote it.
    pub reason: String,
}

/// All layers of one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers {
    /// Operator override.
    pub override_: Option<Override>,
    /// Agent claim (`None`: no agent reports this backend).
    pub agent: Option<AgentClaim>,
    /// Overwatch's validation.
    pub validation: Validation,
}

/// The effective status and the rule that decided it, in words for operators.
pub fn effective(layers: &Layers) -> (Effective, String) {
    if let Some(o) = &layers.override_ {
        let status = if o.healthy {
            Effective::Healthy
        } else {
            Effective::Unhealthy
        };
        return (status, format!("operator override: {}", o.reason));
    }
    if let Some(agent) = &layers.agent {
        if agent.left {
            return (Effective::Draining, "agent left the cluster".into());
        }
        if agent.draining {
            return (Effective::Draining, "agent: drain or maint".into());
        }
    }
    if let Validation::Unhealthy(reason) = &layers.validation {
        return (Effective::Unhealthy, format!("validation: {reason}"));
    }
    match (&layers.agent, &layers.validation) {
        (Some(agent), _) if agent.fresh => {
            if agent.healthy {
                (Effective::Healthy, "agent: up".into())
            } else {
                (Effective::Unhealthy, "agent: down".into())
            }
        }
        (Some(_stale), Validation::Healthy) => {
            (Effective::Healthy, "agent stale; validation passes".into())
        }
        (Some(_stale), _) => (Effective::Stale, "agent stale".into()),
        (None, Validation::Healthy) => (Effective::Healthy, "validation passes".into()),
        (None, Validation::Pending) => (Effective::Healthy, "not checked yet".into()),
        (None, Validation::Disabled) => (Effective::Healthy, "validation disabled".into()),
        (None, Validation::Unhealthy(_)) => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(
        override_: Option<bool>,
        agent: Option<(bool, bool, bool)>,
        validation: Validation,
    ) -> Effective {
        effective(&Layers {
            override_: override_.map(|healthy| Override {
                healthy,
                reason: "test".into(),
            }),
            agent: agent.map(|(draining, healthy, fresh)| AgentClaim {
                left: false,
                draining,
                healthy,
                fresh,
            }),
            validation,
        })
        .0
    }

    #[test]
    fn an_override_outranks_everything() {
        let bad = Validation::Unhealthy("refused".into());
        assert_eq!(
            layers(Some(true), Some((true, false, false)), bad.clone()),
            Effective::Healthy
        );
        assert_eq!(
            layers(Some(false), Some((false, true, true)), Validation::Healthy),
            Effective::Unhealthy
        );
    }

    #[test]
    fn agent_drain_outranks_validation_and_health() {
        assert_eq!(
            layers(None, Some((true, true, true)), Validation::Healthy),
            Effective::Draining
        );
        assert_eq!(
            layers(
                None,
                Some((true, true, true)),
                Validation::Unhealthy("x".into())
            ),
            Effective::Draining
        );
    }

    #[test]
    fn failing_validation_vetoes_an_agent_that_claims_up() {
        assert_eq!(
            layers(
                None,
                Some((false, true, true)),
                Validation::Unhealthy("503".into())
            ),
            Effective::Unhealthy
        );
    }

    #[test]
    fn a_fresh_agent_claim_decides_when_validation_does_not_veto() {
        assert_eq!(
            layers(None, Some((false, true, true)), Validation::Disabled),
            Effective::Healthy
        );
        assert_eq!(
            layers(None, Some((false, false, true)), Validation::Healthy),
            Effective::Unhealthy
        );
    }

    #[test]
    fn a_stale_agent_is_out_unless_validation_passes() {
        assert_eq!(
            layers(None, Some((false, true, false)), Validation::Disabled),
            Effective::Stale
        );
        assert_eq!(
            layers(None, Some((false, true, false)), Validation::Pending),
            Effective::Stale
        );
        assert_eq!(
            layers(None, Some((false, true, false)), Validation::Healthy),
            Effective::Healthy
        );
    }

    #[test]
    fn without_an_agent_validation_decides() {
        assert_eq!(layers(None, None, Validation::Healthy), Effective::Healthy);
        assert_eq!(
            layers(None, None, Validation::Unhealthy("x".into())),
            Effective::Unhealthy
        );
        assert_eq!(layers(None, None, Validation::Disabled), Effective::Healthy);
        assert_eq!(layers(None, None, Validation::Pending), Effective::Healthy);
    }

    #[test]
    fn the_reason_names_the_deciding_layer() {
        let (_, why) = effective(&Layers {
            override_: None,
            agent: None,
            validation: Validation::Unhealthy("http 503".into()),
        });
        assert_eq!(why, "validation: http 503");
    }
}
