//! `shoal`: the command line front end. Stream and queue commands arrive with their issues.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("error: no commands yet");
    ExitCode::from(2)
}
