//! `llm-header-forward`: vet a plugin configuration and explain decisions offline, with the same
//! decision code the filter runs in Envoy.
//!
//!   llm-header-forward check   --config plugin.json [--json]
//!   llm-header-forward explain --config plugin.json --request req.json [--json]
//!   llm-header-forward schema
//!
//! `-` reads a file from standard input. Exit status: 0 fine (explain: forwarded), 1 invalid
//! configuration (explain: the request would be rejected), 2 usage or I/O error.

// The CLI is a native tool. `cargo build --target wasm32-unknown-unknown` builds it too (as an
// empty module, so that the plain build command works); the filter is the library,
// `llm_header_forward.wasm`.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use llm_header_forward::config;
    use llm_header_forward::decision::Decision;
    use llm_header_forward::explain::{HttpRequest, decide, to_json, to_text};
    use llm_header_forward::policy::Policy;
    use serde_json::json;
    use std::io::Read;
    use std::process::ExitCode;

    const USAGE: &str = "usage:
      llm-header-forward check   --config <plugin.json|-> [--json]
      llm-header-forward explain --config <plugin.json|-> --request <request.json|request.http|-> [--json]
      llm-header-forward schema";

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match run(&args) {
            Ok(code) => code,
            Err(message) => {
                eprintln!("llm-header-forward: {message}\n{USAGE}");
                ExitCode::from(2)
            }
        }
    }

    fn run(args: &[String]) -> Result<ExitCode, String> {
        let (command, rest) = args.split_first().ok_or("no command")?;
        let mut config = None;
        let mut request = None;
        let mut as_json = false;
        let mut it = rest.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--config" => config = Some(it.next().ok_or("--config needs a file")?.clone()),
                "--request" => request = Some(it.next().ok_or("--request needs a file")?.clone()),
                "--json" => as_json = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(ExitCode::SUCCESS);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        match command.as_str() {
            "schema" => {
                print!("{}", config::schema());
                Ok(ExitCode::SUCCESS)
            }
            "check" => {
                let bytes = read(config.as_deref().ok_or("check needs --config")?)?;
                let result = Policy::from_json(&bytes);
                if as_json {
                    let problems = result.as_ref().err().map(|e| e.0.clone()).unwrap_or_default();
                    println!("{}", json!({"valid": result.is_ok(), "problems": problems}));
                } else {
                    match &result {
                        Ok(p) => {
                            println!(
                                "configuration is valid: {} provider(s): {}",
                                p.providers.len(),
                                p.providers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                            );
                            for c in &p.chains {
                                let attempts: Vec<String> = c
                                    .attempts
                                    .iter()
                                    .map(|a| {
                                        let name = p.providers.get(a.provider).map_or("?", |p| p.name.as_str());
                                        match &a.model {
                                            Some(m) => format!("{name} (model {m})"),
                                            None => name.to_string(),
                                        }
                                    })
                                    .collect();
                                println!("fallback chain {}: {}", c.name, attempts.join(" -> "));
                            }
                        }
                        Err(e) => {
                            println!("configuration is invalid ({} problem(s)):", e.0.len());
                            for problem in &e.0 {
                                println!("  - {problem}");
                            }
                        }
                    }
                }
                Ok(if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
            }
            "explain" => {
                let policy = Policy::from_json(&read(config.as_deref().ok_or("explain needs --config")?)?)
                    .map_err(|e| format!("invalid configuration: {e}"))?;
                let request = HttpRequest::parse(&read(request.as_deref().ok_or("explain needs --request")?)?)?;
                let decision = decide(&policy, &request);
                if as_json {
                    println!("{}", serde_json::to_string_pretty(&to_json(&request, &decision)).unwrap_or_default());
                } else {
                    print!("{}", to_text(&request, &decision));
                }
                Ok(match decision {
                    Decision::Forward(_) => ExitCode::SUCCESS,
                    Decision::Reject(_) => ExitCode::from(1),
                })
            }
            other => Err(format!("unknown command {other:?}")),
        }
    }

    fn read(path: &str) -> Result<Vec<u8>, String> {
        if path == "-" {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(|e| format!("stdin: {e}"))?;
            return Ok(buf);
        }
        std::fs::read(path).map_err(|e| format!("{path}: {e}"))
    }
}
