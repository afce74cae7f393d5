//! Guarded operations (docs/guard.md): `plan`, `approve`, `apply`, `halt`, `undo` and
//! `audit`.

use std::path::PathBuf;

use lifeboat_core::config::Config;
use lifeboat_core::people::Role;
use lifeboat_core::{Error, Result};
use lifeboat_engine::context::load_config;
use lifeboat_engine::guard::{self, Applied, Approval, Planned, Signer};
use lifeboat_engine::progress::thousands;

use crate::output::{print_json, Terminal};
use crate::EXIT_PROBLEM;

#[derive(clap::Args)]
pub struct PlanArgs {
    /// The operation, as declared in `[operations.NAME]`.
    operation: String,
    /// The IDs, comma separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "ids_from")]
    ids: Vec<String>,
    /// A file of IDs, one per line.
    #[arg(long, value_name = "FILE")]
    ids_from: Option<PathBuf>,
    /// The author's OpenSSH private key (declared in `[authors]`): the plan is signed with it.
    #[arg(long, value_name = "PATH")]
    key: Option<PathBuf>,
    /// No longer accepted: the key says who the author is.
    #[arg(long, hide = true)]
    by: Option<String>,
    /// Where to write the plan.
    #[arg(short = 'o', long = "output", default_value = "plan.json")]
    output: PathBuf,
}

#[derive(clap::Args)]
pub struct ApproveArgs {
    plan: PathBuf,
    /// The approver's OpenSSH private key (declared in `[approvers]`): signs the plan's hash.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["signature", "verify"])]
    key: Option<PathBuf>,
    /// A signature of the plan's hash made with `ssh-keygen -Y sign -n lifeboat-plan@lifeboat`.
    #[arg(long, value_name = "FILE", conflicts_with = "verify")]
    signature: Option<PathBuf>,
    /// List who signed the plan file and whether each signature is valid (offline: only the
    /// configuration's keys are used).
    #[arg(long)]
    verify: bool,
    #[arg(long, requires = "verify")]
    json: bool,
    /// No longer accepted: the key says who the approver is.
    #[arg(long, hide = true)]
    by: Option<String>,
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    plan: PathBuf,
    /// Wave sizes, cumulative: counts or percentages of the plan's tenants.
    #[arg(long, default_value = "1,5%,25%,100%")]
    waves: String,
    /// Who applies (default: the login name).
    #[arg(long)]
    by: Option<String>,
}

#[derive(clap::Args)]
pub struct PlanRefArgs {
    plan: PathBuf,
    #[arg(long)]
    by: Option<String>,
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// `verify`: check the chain instead of listing it.
    #[arg(value_parser = ["verify"])]
    action: Option<String>,
    #[arg(long)]
    json: bool,
    /// `verify`: how long an entry may wait for its anchor in the vault before it counts
    /// as a problem (entries written by `lifeboat serve` are anchored within seconds while
    /// it runs, or by the next command that holds the vault).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    grace_seconds: u64,
}

/// `--by` used to name the author or approver; a key does now.
pub fn refuse_by(by: &Option<String>, role: Role) -> Result<()> {
    if by.is_some() {
        return Err(Error::usage(format!(
            "--by no longer says who signs: pass --key PATH, your OpenSSH private key declared \
             in {} (docs/guard.md)",
            role.table()
        )));
    }
    Ok(())
}

/// The signer of `role` from `--key PATH`, required.
pub fn signer(config: &Config, key: &Option<PathBuf>, role: Role) -> Result<Signer> {
    let path = key.as_ref().ok_or_else(|| {
        Error::usage(format!(
            "--key PATH is required: the {role} signs with their OpenSSH private key, declared \
             in {}",
            role.table()
        ))
    })?;
    Signer::open(config, role, path)
}

pub async fn plan(config_path: Option<PathBuf>, args: PlanArgs) -> Result<u8> {
    refuse_by(&args.by, Role::Author)?;
    let config = load_config(config_path.as_deref())?;
    let author = signer(&config, &args.key, Role::Author)?;
    let mut given = args.ids.clone();
    if let Some(file) = &args.ids_from {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::usage(format!("cannot read {}: {e}", file.display())))?;
        given.extend(text.lines().map(str::to_string));
    }
    let planned = guard::plan(
        &config,
        &config_path,
        &args.operation,
        given,
        &author,
        &args.output,
    )
    .await?;
    print_planned(&planned);
    Ok(0)
}

/// A plan's summary, and what it needs next.
pub fn print_planned(p: &Planned) {
    crate::say!(
        "plan {} for {} ({} {} IDs) by {} (key {}): {} tenants, {} rows",
        &p.hash[..12],
        p.operation,
        p.ids,
        p.kind,
        p.author,
        p.key,
        p.tenants,
        thousands(p.totals.values().sum())
    );
    for (table, n) in &p.totals {
        crate::say!("  {table:<40} {:>10} rows", thousands(*n));
    }
    if let Some(users) = p.users {
        crate::say!("  users affected: {}", thousands(users));
    }
    crate::say!(
        "written to {}, signed; it needs {} approval(s): lifeboat approve {} --key PATH",
        p.output.display(),
        p.approvals_required,
        p.output.display()
    );
}

pub async fn approve(config_path: Option<PathBuf>, args: ApproveArgs) -> Result<u8> {
    refuse_by(&args.by, Role::Approver)?;
    let config = load_config(config_path.as_deref())?;
    if args.verify {
        return verify(&config, &args);
    }
    let signer_key;
    let approval =
        match (&args.key, &args.signature) {
            (_, Some(file)) => Approval::Signature(std::fs::read_to_string(file).map_err(|e| {
                Error::usage(format!("cannot read signature {}: {e}", file.display()))
            })?),
            (key, None) => {
                signer_key = signer(&config, key, Role::Approver)?;
                Approval::Key(&signer_key)
            }
        };
    let a = guard::approve(&config, &config_path, &args.plan, approval).await?;
    crate::say!(
        "{} plan {} ({}) as {} (key {}): {} of {} approvals",
        if a.new {
            "approved"
        } else {
            "already approved:"
        },
        a.short,
        a.operation,
        a.approver,
        a.key,
        a.approvals,
        a.required
    );
    Ok(0)
}

/// `approve --verify`: who signed the plan file, each signature valid or not and why.
/// Exit 0 only when the author's signature is valid and the approvals are enough.
fn verify(config: &Config, args: &ApproveArgs) -> Result<u8> {
    let (file, verdict) = guard::verify(config, &args.plan)?;
    let required = config.guard.approvals_required as usize;
    let ok = verdict.author_problem.is_none() && verdict.approvers.len() >= required;
    if args.json {
        let signatures: Vec<serde_json::Value> = verdict
            .checked
            .iter()
            .map(|c| {
                serde_json::json!({"role": c.role, "name": c.name, "key": c.key,
                                   "valid": c.problem.is_none(), "problem": c.problem})
            })
            .collect();
        print_json(&serde_json::json!({
            "plan": file.hash, "author": file.plan.author, "signatures": signatures,
            "author_signed": verdict.author_problem.is_none(),
            "approvals": verdict.approvers.len(), "required": required, "ok": ok}));
        return Ok(if ok { 0 } else { EXIT_PROBLEM });
    }
    crate::say!(
        "plan {} ({}) by {}",
        file.short(),
        file.plan.operation,
        file.plan.author
    );
    for c in &verdict.checked {
        crate::say!(
            "  {:<9} {:<16} {:<52} {}",
            c.role.to_string(),
            c.name,
            c.key.as_deref().unwrap_or("-"),
            match &c.problem {
                None => "valid".to_string(),
                Some(p) => format!("INVALID: {p}"),
            }
        );
    }
    if let Some(problem) = &verdict.author_problem {
        crate::say!("not signed by its author: {problem}");
    }
    crate::say!(
        "{} of {required} approvals{}",
        verdict.approvers.len(),
        if ok {
            ": it may be applied"
        } else {
            ": it may not be applied"
        }
    );
    Ok(if ok { 0 } else { EXIT_PROBLEM })
}

pub async fn apply(config_path: Option<PathBuf>, args: ApplyArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let applied = guard::apply(
        &config,
        &config_path,
        &args.plan,
        &args.waves,
        args.by,
        &Terminal::default(),
    )
    .await?;
    let plan = args.plan.display();
    match applied {
        Applied::Done { short, tenants } => {
            crate::say!(
                "applied plan {short} to {tenants} tenants; `lifeboat undo {plan}` reverts it"
            );
            Ok(0)
        }
        Applied::Halted { wave, by } => {
            eprintln!(
                "halted by {by} before wave {wave}; `lifeboat apply {plan}` continues, \
                 `lifeboat undo {plan}` reverts"
            );
            Ok(EXIT_PROBLEM)
        }
        Applied::Diverged { wave, differences } => {
            eprintln!(
                "wave {wave} diverged from the plan; it was rolled back and the apply \
                 stopped:\n  {}",
                differences.join("\n  ")
            );
            Ok(EXIT_PROBLEM)
        }
    }
}

pub async fn halt(config_path: Option<PathBuf>, args: PlanRefArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let short = guard::halt(&config, &config_path, &args.plan, args.by).await?;
    crate::say!("plan {short} will stop before its next wave");
    Ok(0)
}

pub async fn undo(config_path: Option<PathBuf>, args: PlanRefArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let undone = guard::undo(
        &config,
        &config_path,
        &args.plan,
        args.by,
        &Terminal::default(),
    )
    .await?;
    if undone.undeleted {
        return Ok(crate::tenant::print_undeleted(
            undone.tenants,
            undone.rows,
            undone.failures,
        ));
    }
    if undone.failures > 0 {
        eprintln!(
            "undo: {} tenant restores failed or differ from the vault",
            undone.failures
        );
        return Ok(EXIT_PROBLEM);
    }
    crate::say!(
        "undid plan {}: {} tenants restored to just before their wave ({} rows), every one \
         verified",
        undone.short,
        undone.tenants,
        thousands(undone.rows)
    );
    Ok(0)
}

pub async fn audit(config_path: Option<PathBuf>, args: AuditArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    if args.action.as_deref() == Some("verify") {
        let grace_us =
            i64::try_from(args.grace_seconds.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        let (entries, verified) = guard::audit_verify(&config, &config_path, grace_us).await?;
        let problems = verified.problems;
        if args.json {
            print_json(
                &serde_json::json!({"entries": entries, "ok": problems.is_empty(),
                "problems": problems, "pending": verified.pending}),
            );
        } else if problems.is_empty() {
            crate::say!(
                "audit log intact: {entries} entries, every hash and link checks, every anchor \
                 is an entry{}",
                if verified.pending.is_empty() {
                    ", every entry is anchored".to_string()
                } else {
                    format!("; {} entries not anchored yet", verified.pending.len())
                }
            );
            for p in &verified.pending {
                crate::say!("PENDING {p}");
            }
        } else {
            for p in &problems {
                crate::say!("TAMPERED {p}");
            }
        }
        return Ok(if problems.is_empty() { 0 } else { EXIT_PROBLEM });
    }
    let entries = guard::audit_entries(&config, &config_path).await?;
    if args.json {
        print_json(&entries);
        return Ok(0);
    }
    for e in &entries {
        // A plan's hash is shown short, as everywhere; other subjects whole.
        let is_hash = e.subject.len() == 64 && e.subject.bytes().all(|b| b.is_ascii_hexdigit());
        let subject = if is_hash {
            &e.subject[..12]
        } else {
            &e.subject
        };
        crate::say!(
            "{:>5}  {}  {:<12} {:<14} {}  {}",
            e.seq,
            e.at,
            e.actor,
            e.action,
            subject,
            e.details
        );
    }
    Ok(0)
}
