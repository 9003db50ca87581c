# Sourced by the bench scripts: writes the manifest of a generated bench crate, outside the
# workspace, reusing the workspace's lock file and target directory so that nothing but
# the generated tests is built.
#
#   bench_crate <dir> <name> [extra dev-dependency lines]
bench_crate() {
  local dir="$1" name="$2" extra="${3:-}"
  mkdir -p "$dir/tests"
  cp "$root/Cargo.lock" "$dir/Cargo.lock"
  cat > "$dir/Cargo.toml" <<TOML
[package]
name = "$name"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

[dev-dependencies]
edge-test = { path = "$root/edge-test" }
serde_json = "1"
$extra

# As in the workspace: dependencies optimized, or cranelift dominates every figure.
[profile.dev.package."*"]
opt-level = 3
debug = false

[profile.dev]
debug = "line-tables-only"
TOML
}
