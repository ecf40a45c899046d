//! End-to-end tests of the `shoal` binary.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is the failure report, and test bytes wrap on purpose"
)]

use std::process::Command;

fn shoal() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.env_remove("SHOAL_DATA_DIR").env_remove("XDG_DATA_HOME");
    cmd
}

#[test]
fn data_dir_resolution_follows_the_contract() {
    let out = shoal()
        .args(["data-dir", "-o", "text"])
        .env("HOME", "/home/u")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "/home/u/.local/share/shoal\n"
    );
    let out = shoal()
        .args(["data-dir", "-o", "text"])
        .env("HOME", "/home/u")
        .env("XDG_DATA_HOME", "/xdg")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "/xdg/shoal\n");
    let out = shoal()
        .args(["data-dir"])
        .env("SHOAL_DATA_DIR", "/env dir")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"data_dir\":\"/env dir\"}\n"
    );
    let out = shoal()
        .args(["--data-dir", "/flag", "data-dir", "-o", "text"])
        .env("SHOAL_DATA_DIR", "/env")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "/flag\n");
}

#[test]
fn usage_errors_exit_2_with_one_line_on_stderr() {
    let out = shoal().arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert!(out.stdout.is_empty());
}
