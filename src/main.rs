//! The `ripcord` command line. Thin: each command is a file of `cli/`
//! that parses its arguments, wires the library's stages together and maps
//! outcomes to exit codes.

/// `eprintln!` that never panics: a closed stderr (`ripcord … 2>&1 | head
/// -1`) is no reason to crash.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
