//! The `pvefleet` binary: everything happens in the library ([`pvefleet::app::main`]).

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(pvefleet::app::main())
}
