//! Log lines on stderr, one per event, for journald (which adds the time and the unit).
//! Nothing logged here ever contains a password: requests are logged by what they asked,
//! never by their bytes.

/// `remote-directoryd: <level>: <message>` on stderr.
macro_rules! log {
    ($level:literal, $($arg:tt)*) => {
        eprintln!(concat!("remote-directoryd: ", $level, ": {}"), format_args!($($arg)*))
    };
}
pub(crate) use log;
