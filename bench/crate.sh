# Sourced by the bench scripts: the manifest of a generated bench crate (outside the
# workspace, reusing the workspace's lock file and target directory so that nothing but
# the generated tests is built), and how a command is timed.
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

# Times a command, in seconds, its output kept in $bench/last-run.log. A run that fails is
# not a figure: stop and show why.
seconds() {
  local start end
  start=$(date +%s.%N)
  if ! "$@" >"$bench/last-run.log" 2>&1; then
    echo "failed: $* (output in $bench/last-run.log)" >&2
    return 1
  fi
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}
