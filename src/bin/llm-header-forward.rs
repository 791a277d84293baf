//! `llm-header-forward`: vet a plugin configuration and explain decisions offline, with the same
//! decision code the filter runs in Envoy.
//!
//!   llm-header-forward check   --config plugin.json [--envoy envoy.yaml] [--json]
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
    use llm_header_forward::envoy_check;
    use llm_header_forward::explain::{HttpRequest, decide, to_json, to_text};
    use llm_header_forward::policy::Policy;
    use serde_json::{Value, json};
    use std::io::Read;
    use std::process::ExitCode;

    const USAGE: &str = "usage:
      llm-header-forward check   [--config <plugin.json|->] [--envoy <envoy.yaml>] [--json]
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
        let mut envoy = None;
        let mut as_json = false;
        let mut it = rest.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--config" => config = Some(it.next().ok_or("--config needs a file")?.clone()),
                "--request" => request = Some(it.next().ok_or("--request needs a file")?.clone()),
                "--envoy" => envoy = Some(it.next().ok_or("--envoy needs a file")?.clone()),
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
                let envoy_doc = match &envoy {
                    Some(path) => Some(
                        serde_yaml::from_slice::<Value>(&read(path)?).map_err(|e| format!("{path}: not YAML: {e}"))?,
                    ),
                    None => None,
                };
                let bytes = match (&config, &envoy_doc) {
                    (Some(path), _) => read(path)?,
                    (None, Some(doc)) => envoy_check::listener_plugin_configs(doc)
                        .into_iter()
                        .next()
                        .ok_or("the Envoy configuration has no llm-header-forward listener filter")?
                        .into_bytes(),
                    (None, None) => return Err("check needs --config or --envoy".into()),
                };
                let result = Policy::from_json(&bytes);
                let mut problems = result.as_ref().err().map(|e| e.0.clone()).unwrap_or_default();
                if let (Ok(policy), Some(doc)) = (&result, &envoy_doc) {
                    let plugin: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    problems.extend(envoy_check::check(policy, &plugin, doc));
                    for listener in envoy_check::listener_plugin_configs(doc) {
                        let listener: Value = serde_json::from_str(&listener).unwrap_or(Value::Null);
                        if config.is_some() && listener != plugin {
                            problems.push("the Envoy listener's plugin configuration differs from --config".into());
                        }
                    }
                }
                let valid = problems.is_empty();
                if as_json {
                    println!("{}", json!({"valid": valid, "problems": problems}));
                } else {
                    match &result {
                        Ok(p) if valid => {
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
                            if envoy.is_some() {
                                println!("Envoy wiring of the fallback chains: ok");
                            }
                        }
                        _ => {
                            println!("configuration is invalid ({} problem(s)):", problems.len());
                            for problem in &problems {
                                println!("  - {problem}");
                            }
                        }
                    }
                }
                Ok(if valid { ExitCode::SUCCESS } else { ExitCode::from(1) })
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
