//! Connections per user (`max_connections_per_user`): a login let in by its password is
//! refused, or let in with the user's oldest connection disconnected (at the next TICK, by
//! the broker's kick, as `kickUser` does); connections are followed from their login to
//! their DISCONNECT. The chat rate is applied in the chat pipeline (`crate::limits::Limits::chat`).

use super::{Action, Plugin, State};
use crate::auth::{Identity, Refusal};
use crate::logging::printable;

impl Plugin {
    /// A new connection's login, let in by its password, before it is recorded: `Err` when
    /// the user holds `max_connections_per_user` connections already and the policy is
    /// `refuse`. Superusers and bridge accounts are not limited.
    pub(super) fn admit_connection(
        state: &mut State,
        client_id: &[u8],
        identity: &Identity,
    ) -> Result<(), Refusal> {
        if identity.superuser || identity.relay {
            return Ok(());
        }
        match state.limits.admit(&identity.user_id, client_id) {
            Ok(None) => Ok(()),
            Ok(Some(oldest)) => {
                log::info!(
                    "user '{}' logs in as client '{}' beyond max_connections_per_user: its \
                     oldest connection, client '{}', is disconnected",
                    printable(&identity.username),
                    printable(&String::from_utf8_lossy(client_id)),
                    printable(&String::from_utf8_lossy(&oldest))
                );
                state.outbox.push(Action::KickClient(oldest.into_vec()));
                Ok(())
            }
            Err(held) => {
                log::warn!(
                    "login refused for user '{}' as client '{}': it holds {held} connections \
                     already (max_connections_per_user)",
                    printable(&identity.username),
                    printable(&String::from_utf8_lossy(client_id))
                );
                Err(Refusal::TooManyConnections)
            }
        }
    }

    /// A new connection's login recorded.
    pub(super) fn connection_accepted(
        state: &mut State,
        client_id: &[u8],
        pointer: usize,
        identity: &Identity,
    ) {
        if identity.superuser || identity.relay {
            return;
        }
        state
            .limits
            .connected(&identity.user_id, client_id, pointer);
    }
}
