//! Customers' tokens for local use (decision 0013). Production tokens come from the shop's
//! identity provider; this is how a developer, a script or a drill acts as a customer.
//!
//! ```text
//! token keygen .local/auth          # signing.pem (private, 0600) and public.pem, unless present
//! token mint alice                  # a token for customer alice, signed with $ORDER_SYSTEM_SIGNING_KEY
//! token mint alice --ttl-secs 60
//! token verify "$TOKEN" --public-key .local/auth/public.pem   # whose is it, or why refused
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use platform::auth::{AuthSettings, DEFAULT_AUDIENCE, DEFAULT_ISSUER, Signer, Verifier};

#[derive(Parser)]
#[command(version, about = "Make a key pair for customers' tokens, or mint a token")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes DIR/signing.pem and DIR/public.pem, an Ed25519 pair; keeps a pair already there.
    Keygen { dir: PathBuf },
    /// Prints a token whose subject is CUSTOMER.
    Mint {
        customer: String,
        /// The private key (PEM).
        #[arg(long, env = "ORDER_SYSTEM_SIGNING_KEY")]
        key: PathBuf,
        #[arg(long, default_value_t = 12 * 3600)]
        ttl_secs: u64,
        #[arg(long, default_value = DEFAULT_ISSUER)]
        issuer: String,
        #[arg(long, default_value = DEFAULT_AUDIENCE)]
        audience: String,
        /// What else the token grants: `orders:ship` for a fulfilment operator.
        #[arg(long)]
        scope: Option<String>,
    },
    /// Checks a token as the order service would: prints its customer, or why it is refused.
    Verify {
        token: String,
        /// The public key file the order service trusts (PEM).
        #[arg(long)]
        public_key: PathBuf,
        #[arg(long, default_value = DEFAULT_ISSUER)]
        issuer: String,
        #[arg(long, default_value = DEFAULT_AUDIENCE)]
        audience: String,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Keygen { dir } => keygen(&dir),
        Command::Mint { customer, key, ttl_secs, issuer, audience, scope } => {
            let signer = Signer::from_file(&key, &issuer, &audience)?;
            println!("{}", signer.mint_with_scope(&customer, scope.as_deref(), Duration::from_secs(ttl_secs)));
            Ok(())
        }
        Command::Verify { token, public_key, issuer, audience } => {
            let settings = AuthSettings { public_key_file: Some(public_key), issuer, audience, ..Default::default() };
            let verifier = Verifier::from_settings(&settings)?;
            match verifier.verify(token.trim()) {
                Ok(customer) => {
                    println!("{customer}");
                    Ok(())
                }
                Err(rejection) => anyhow::bail!("refused: {}", rejection.describe()),
            }
        }
    }
}

fn keygen(dir: &Path) -> anyhow::Result<()> {
    let (private_file, public_file) = (dir.join("signing.pem"), dir.join("public.pem"));
    if private_file.exists() && public_file.exists() {
        // A key written before keys were made owner-only keeps working, but not readable by all.
        return owner_only(&private_file);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (private, public) = platform::auth::generate_key_pair()?;
    let mut file =
        private_file_options().open(&private_file).with_context(|| format!("writing {}", private_file.display()))?;
    file.write_all(private.as_bytes())?;
    std::fs::write(&public_file, public).with_context(|| format!("writing {}", public_file.display()))?;
    eprintln!("wrote {} and {}", private_file.display(), public_file.display());
    Ok(())
}

/// Makes `path` readable and writable by its owner only, if it is not already.
fn owner_only(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {} to its owner", path.display()))?;
        eprintln!("{} was readable by others; it is now 0600", path.display());
    }
    Ok(())
}

/// Readable by its owner only.
fn private_file_options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true).mode(0o600);
    options
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn the_signing_key_is_owner_only_whether_new_or_found() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
        let dir = std::env::temp_dir().join(format!("token-keygen-{}-{nanos}", std::process::id()));
        keygen(&dir).expect("keygen");
        assert_eq!(mode(&dir.join("signing.pem")), 0o600, "a new key");
        std::fs::set_permissions(dir.join("signing.pem"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        keygen(&dir).expect("keygen again");
        assert_eq!(mode(&dir.join("signing.pem")), 0o600, "a key found readable by all");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
