#!/usr/bin/env bash
# Brings template/locks/*.lock up to date with the template's manifests,
# changing no version that is already locked: generates the project with and
# without serde validation, lets cargo add what the manifests now need to
# the current lock file, and stores the result with the project's name as
# Liquid again. Run after changing a dependency of template/Cargo.toml.liquid
# or template/runtime/Cargo.toml; tests/ecosystem.rs fails until then.
#
#   tools/update-locks.sh
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
name=lock-refresh-project

cargo build --quiet --manifest-path "$repo/Cargo.toml" --bin cargo-generate
mkdir -p "$work/source"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/source")

for lock in validation plain; do
    validation=$([ "$lock" = validation ] && echo true || echo false)
    out="$work/$lock"
    mkdir -p "$out"
    "$repo/target/debug/cargo-generate" generate --path "$work/source" template \
        --name "$name" --silent --vcs none --destination "$out" \
        -d use_serde_validation="$validation" -d add_metrics=true >/dev/null
    (cd "$out/$name" && cargo metadata --format-version 1 >/dev/null)
    sed "s/^name = \"$name\"$/name = \"{{project-name}}\"/" "$out/$name/Cargo.lock" \
        >"$repo/template/locks/$lock.lock"
    echo "template/locks/$lock.lock"
done
