//! `embed_migrations!` reads the migrations when this crate compiles, and Cargo would not compile
//! it again for a migration added: only its own sources are watched. This makes it watch the folder.
fn main() {
    println!("cargo:rerun-if-changed=../migrations/order");
}
