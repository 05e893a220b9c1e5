//! The project's own protocol on `daemon.socket`: the library's `type = "daemon"`
//! directories. The codec is the library's ([`remote_directory::wire`]), so client and
//! daemon cannot drift apart; this module only runs the decoded call on the named directory
//! and encodes its outcome, message included.

use crate::config::Section;
use crate::listener::{Context, Exchange, Service, Step};
use remote_directory::wire::{self, Answer, Call, Request, WireError};
use remote_directory::{parse_client_ip, Error, Kind, Result};
use std::sync::Arc;

pub fn build(_: &mut Section) -> Result<Arc<dyn Service>> {
    Ok(Arc::new(Own))
}

struct Own;

impl Service for Own {
    fn name(&self) -> &'static str {
        "library"
    }

    fn max_request(&self) -> usize {
        4 + wire::MAX_REQUEST
    }

    fn open(&self) -> Box<dyn Exchange> {
        Box::new(Own)
    }
}

impl Exchange for Own {
    fn step(&mut self, input: &[u8], ctx: &Context) -> Step {
        match wire::decode_request(input) {
            Ok(None) => Step::More,
            Ok(Some((request, consumed))) => Step::Reply {
                consumed,
                reply: wire::encode_response(&answer(&request, ctx)),
                close: false,
            },
            // Told to the client, whose error message then says to upgrade.
            Err(e @ WireError::Version(_)) => Step::Refuse {
                reply: wire::encode_response(&Answer {
                    outcome: Err(Error::new(
                        Kind::Protocol,
                        format!("remote-directoryd: {e}"),
                    )),
                    notice: None,
                }),
                reason: e.to_string(),
            },
            Err(e) => Step::Refuse {
                reply: Vec::new(),
                reason: e.to_string(),
            },
        }
    }
}

/// The named directory's answer to the call, exactly as it would be in the client's process
/// (with the note an OK may carry).
pub fn answer(request: &Request, ctx: &Context) -> Answer {
    let outcome = call(request, ctx);
    let notice = match outcome {
        Ok(()) => remote_directory::take_notice(),
        Err(_) => None,
    };
    Answer { outcome, notice }
}

fn call(request: &Request, ctx: &Context) -> Result<()> {
    let Some(directory) = ctx.directories.get(request.directory) else {
        let served: Vec<String> = ctx.directories.names().map(|n| format!("'{n}'")).collect();
        return Err(Error::new(
            Kind::Config,
            format!(
                "remote-directoryd serves no directory named '{}'; it serves {}",
                request.directory,
                served.join(", ")
            ),
        ));
    };
    match request.call {
        Call::Auth {
            user,
            secret,
            client_ip,
        } => {
            let client_ip = client_ip.map(parse_client_ip).transpose()?;
            directory.auth_from(user, secret, client_ip)
        }
        Call::Rcpt { address } => directory.rcpt(address),
        Call::IsLocalDomain { domain } => directory.is_local_domain(domain),
    }
}
