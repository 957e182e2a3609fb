#!/bin/sh
# install.sh -- install, upgrade or roll back orchestrator-pex from a signed release bundle, offline.
#
#   sh install.sh --prefix DIR --trust ALLOWED_SIGNERS [--bundle DIR] [--platform TAG] [--agent-prefix NPM_PREFIX]
#   sh install.sh --prefix DIR --rollback [--trust ALLOWED_SIGNERS]
#
# Install/upgrade: verifies the bundle's SHA256SUMS.sig (OpenSSH signature, namespace "orchestrator-pex") against
# the allowed_signers file given with --trust, then every file SHA256SUMS lists that is present (the PEX for this
# host must be), on a private copy in a temporary folder. Only then it installs the PEX for this host's platform to
# DIR/<version>/ (with SHA256SUMS, its signature, the SBOM and the trust file, for `orchestrator-pex self verify`),
# checks that the installed PEX starts, and switches DIR/current to it atomically (a new symlink renamed over the
# old one); DIR/previous then names the version it replaced. Earlier versions are kept.
# Rollback: re-verifies the previous version as installed (signature and checksum), then swaps current and previous.
#
# Anything that does not verify is refused with a message on stderr, exit status 1, and nothing under DIR changed.
# The last line on stdout is always "changed=true" or "changed=false" (re-installing the installed version changes
# nothing), so configuration management can rely on it. Exit 2: bad usage or a missing tool.
# Agent CLI (--agent-prefix NPM_PREFIX): the agent packages of a bundle built with `scripts/release --agent-packages`
# (listed in AGENT-PACKAGES.txt; verified like every other file) are installed offline with
# `npm install --offline --global --prefix NPM_PREFIX TARBALL...` (the agent is then NPM_PREFIX/bin/claude); a
# stamp file NPM_PREFIX/.orchestrator-pex-agent-packages makes a repeated install a no-op. Refused (exit 1) when
# the bundle has no agent packages; exit 2 without npm.
# Needs: POSIX sh, ssh-keygen (OpenSSH >= 8.1), sha256sum or shasum, python3 (which runs the PEX anyway).

set -eu

NAMESPACE=orchestrator-pex
PROG=install.sh
prefix=
trust=
bundle=
platform=
rollback=0
agent_prefix=
agent_changed=false
work=
lockdir=

say() { printf '%s\n' "$*"; }
warn() { printf '%s: %s\n' "$PROG" "$*" >&2; }
cleanup() {
    if [ -n "$work" ]; then rm -rf "$work"; fi
    if [ -n "$lockdir" ]; then rmdir "$lockdir" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

refuse() {
    warn "REFUSED: $*"
    warn "nothing under ${prefix:-the prefix} was changed"
    say "changed=false"
    exit 1
}
usage() {
    warn "$*"
    warn "usage: install.sh --prefix DIR --trust ALLOWED_SIGNERS [--bundle DIR] [--platform TAG] [--agent-prefix DIR] | --prefix DIR --rollback"
    say "changed=false"
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || usage "--prefix needs a value"; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --trust) [ $# -ge 2 ] || usage "--trust needs a value"; trust=$2; shift 2 ;;
        --trust=*) trust=${1#*=}; shift ;;
        --bundle) [ $# -ge 2 ] || usage "--bundle needs a value"; bundle=$2; shift 2 ;;
        --bundle=*) bundle=${1#*=}; shift ;;
        --platform) [ $# -ge 2 ] || usage "--platform needs a value"; platform=$2; shift 2 ;;
        --platform=*) platform=${1#*=}; shift ;;
        --rollback) rollback=1; shift ;;
        --agent-prefix) [ $# -ge 2 ] || usage "--agent-prefix needs a value"; agent_prefix=$2; shift 2 ;;
        --agent-prefix=*) agent_prefix=${1#*=}; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) usage "unknown argument: $1" ;;
    esac
done
[ -n "$prefix" ] || usage "--prefix DIR is required"
if [ -n "$agent_prefix" ]; then
    command -v npm >/dev/null 2>&1 || { warn "--agent-prefix needs npm (Node.js) on this host"; say "changed=false"; exit 2; }
    case "$agent_prefix" in /*) ;; *) agent_prefix=$(pwd)/$agent_prefix ;; esac
fi
case "$prefix" in /*) ;; *) prefix=$(pwd)/$prefix ;; esac
prefix=${prefix%/}

# -- tools -------------------------------------------------------------------------------------------------------
command -v ssh-keygen >/dev/null 2>&1 || { warn "ssh-keygen (OpenSSH >= 8.1) is required to verify the signature"; say "changed=false"; exit 2; }
command -v python3 >/dev/null 2>&1 || { warn "python3 is required (it runs orchestrator-pex)"; say "changed=false"; exit 2; }
if command -v sha256sum >/dev/null 2>&1; then
    sha256() { sha256sum < "$1" | cut -d' ' -f1; }
elif command -v shasum >/dev/null 2>&1; then
    sha256() { shasum -a 256 < "$1" | cut -d' ' -f1; }
else
    warn "sha256sum or shasum is required"; say "changed=false"; exit 2
fi

host_platform() {
    os=$(uname -s); arch=$(uname -m)
    case "$os/$arch" in
        Linux/x86_64|Linux/amd64) echo linux_x86_64 ;;
        Linux/aarch64|Linux/arm64) echo linux_aarch64 ;;
        Darwin/arm64|Darwin/aarch64) echo macos_arm64 ;;
        Darwin/x86_64) echo macos_x86_64 ;;
        *) echo "unsupported-$os-$arch" ;;
    esac
}

# verify_sig DIR TRUST: SHA256SUMS.sig in DIR signs SHA256SUMS in DIR by a key of TRUST; prints the principal.
verify_sig() {
    [ -f "$1/SHA256SUMS" ] || { warn "$1/SHA256SUMS is missing"; return 1; }
    [ -f "$1/SHA256SUMS.sig" ] || { warn "$1/SHA256SUMS.sig is missing"; return 1; }
    principals=$(sed -e 's/^[[:space:]]*//' -e '/^#/d' -e '/^$/d' "$2" | cut -d' ' -f1 | cut -f1 | tr ',' '\n')
    set -f
    for principal in $principals; do
        if ssh-keygen -Y verify -f "$2" -I "$principal" -n "$NAMESPACE" -s "$1/SHA256SUMS.sig" \
            < "$1/SHA256SUMS" >/dev/null 2>&1; then
            set +f
            echo "$principal"
            return 0
        fi
    done
    set +f
    return 1
}

# check_sums_file FILE: every line is "<64 hex>  <plain file name>".
check_sums_file() {
    while IFS= read -r line || [ -n "$line" ]; do
        hash=${line%% *}; name=${line#* }; name=${name# }; name=${name#\*}
        case "$hash" in *[!0-9a-f]*|"") return 1 ;; esac
        [ ${#hash} -eq 64 ] || return 1
        case "$name" in ""|*/*|.*|-*) return 1 ;; esac
    done < "$1"
}

# expected_sum FILE NAME: the hash SHA256SUMS lists for NAME (empty when not listed).
expected_sum() {
    while IFS= read -r line || [ -n "$line" ]; do
        hash=${line%% *}; name=${line#* }; name=${name# }; name=${name#\*}
        if [ "$name" = "$2" ]; then echo "$hash"; return 0; fi
    done < "$1"
}

# swap_link TARGET LINK: point LINK at TARGET atomically (a new symlink renamed over the old one).
swap_link() {
    ln -s "$1" "$2.new.$$"
    python3 -c 'import os, sys; os.replace(sys.argv[1], sys.argv[2])' "$2.new.$$" "$2"
}

lock_prefix() {
    mkdir -p "$prefix"
    if ! mkdir "$prefix/.install.lock" 2>/dev/null; then
        warn "another install.sh holds $prefix/.install.lock (remove it if no install is running)"
        say "changed=false"
        exit 75
    fi
    lockdir="$prefix/.install.lock"
}

# install_agent_packages: the verified agent tarballs of $work/b into $agent_prefix, offline (see the header).
install_agent_packages() {
    [ -f "$work/b/AGENT-PACKAGES.txt" ] \
        || refuse "--agent-prefix: this bundle has no agent packages (build it with scripts/release --agent-packages)"
    set --
    stamp=
    while IFS= read -r line || [ -n "$line" ]; do
        [ -n "$line" ] || continue
        file=$(printf '%s\n' "$line" | cut -d' ' -f2)
        case "$file" in ""|*/*|.*|-*) refuse "AGENT-PACKAGES.txt: bad file name \"$file\"" ;; esac
        [ -f "$work/b/$file" ] || refuse "$bundle/$file (listed in AGENT-PACKAGES.txt) is missing"
        [ -n "$(expected_sum "$work/b/SHA256SUMS" "$file")" ] || refuse "$file is not covered by SHA256SUMS"
        set -- "$@" "$work/b/$file"
        stamp="$stamp$(sha256 "$work/b/$file")  $file
"
    done < "$work/b/AGENT-PACKAGES.txt"
    [ $# -gt 0 ] || refuse "AGENT-PACKAGES.txt lists no package"
    if [ -f "$agent_prefix/.orchestrator-pex-agent-packages" ] \
        && [ "$(cat "$agent_prefix/.orchestrator-pex-agent-packages")" = "$(printf '%s' "$stamp")" ]; then
        say "agent packages already installed in $agent_prefix"
        return 0
    fi
    mkdir -p "$agent_prefix"
    mkdir "$work/npm-cache"
    if ! NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false \
        npm install --offline --global --prefix "$agent_prefix" --cache "$work/npm-cache" --no-audit --no-fund \
        "$@" >&2; then
        refuse "npm install --offline of the agent packages into $agent_prefix failed"
    fi
    printf '%s' "$stamp" > "$agent_prefix/.orchestrator-pex-agent-packages"
    say "installed agent packages into $agent_prefix: $(cut -d' ' -f1 "$work/b/AGENT-PACKAGES.txt" | tr '\n' ' ')"
    agent_changed=true
}

current_version() { if [ -L "$prefix/current" ]; then basename "$(readlink "$prefix/current")"; fi; }
previous_version() { if [ -L "$prefix/previous" ]; then basename "$(readlink "$prefix/previous")"; fi; }

# -- rollback ----------------------------------------------------------------------------------------------------
if [ "$rollback" = 1 ]; then
    cur=$(current_version); prev=$(previous_version)
    [ -n "$prev" ] || refuse "no previous version recorded in $prefix/previous: nothing to roll back to"
    [ -d "$prefix/$prev" ] || refuse "previous version $prev is not installed in $prefix"
    [ "$prev" != "$cur" ] || refuse "previous version $prev is already current"
    ptrust=${trust:-$prefix/$prev/allowed_signers}
    [ -f "$ptrust" ] || refuse "no trust file for $prev: pass --trust ALLOWED_SIGNERS"
    signer=$(verify_sig "$prefix/$prev" "$ptrust") || refuse "$prefix/$prev: signature does not verify with $ptrust"
    check_sums_file "$prefix/$prev/SHA256SUMS" || refuse "$prefix/$prev/SHA256SUMS is malformed"
    pex=$(cd "$prefix/$prev" && ls orchestrator-pex-*.pex 2>/dev/null | head -n 1)
    [ -n "$pex" ] || refuse "$prefix/$prev holds no PEX"
    want=$(expected_sum "$prefix/$prev/SHA256SUMS" "$pex")
    [ -n "$want" ] && [ "$(sha256 "$prefix/$prev/$pex")" = "$want" ] || refuse "$prefix/$prev/$pex does not match its SHA256SUMS"
    lock_prefix
    swap_link "$prev" "$prefix/current"
    if [ -n "$cur" ]; then swap_link "$cur" "$prefix/previous"; fi
    say "rolled back $prefix/current to $prev (was ${cur:-none}; signed by $signer)"
    say "changed=true"
    exit 0
fi

# -- install / upgrade -------------------------------------------------------------------------------------------
[ -n "$trust" ] || usage "--trust ALLOWED_SIGNERS is required (the release key, from a trusted channel)"
[ -f "$trust" ] || refuse "trust file $trust does not exist"
if [ -z "$bundle" ]; then bundle=$(cd "$(dirname "$0")" && pwd); fi
[ -d "$bundle" ] || refuse "bundle folder $bundle does not exist"
platform=${platform:-$(host_platform)}

# Verify a private copy, so what is installed is exactly what was verified.
work=$(mktemp -d "${TMPDIR:-/tmp}/orchestrator-pex-install.XXXXXX")
mkdir "$work/b"
for f in SHA256SUMS SHA256SUMS.sig; do
    [ -f "$bundle/$f" ] || refuse "$bundle/$f is missing"
    cp "$bundle/$f" "$work/b/$f"
done
cp "$trust" "$work/allowed_signers"
signer=$(verify_sig "$work/b" "$work/allowed_signers") \
    || refuse "$bundle/SHA256SUMS.sig is not a valid signature of SHA256SUMS by a key in $trust"
check_sums_file "$work/b/SHA256SUMS" || refuse "$bundle/SHA256SUMS is malformed"

pex=; version=
while IFS= read -r line || [ -n "$line" ]; do
    name=${line#* }; name=${name# }; name=${name#\*}
    case "$name" in
        orchestrator-pex-*-"$platform".pex)
            [ -z "$pex" ] || refuse "SHA256SUMS lists more than one PEX for $platform"
            pex=$name; version=${name#orchestrator-pex-}; version=${version%-"$platform".pex} ;;
    esac
done < "$work/b/SHA256SUMS"
[ -n "$pex" ] || refuse "this bundle has no PEX for platform $platform"
case "$version" in ""|*/*|.*|current|previous) refuse "bad version \"$version\" in $pex" ;; esac

while IFS= read -r line || [ -n "$line" ]; do
    hash=${line%% *}; name=${line#* }; name=${name# }; name=${name#\*}
    if [ ! -f "$bundle/$name" ]; then
        case "$name" in
            "$pex") refuse "$bundle/$pex is missing" ;;
            *) continue ;;  # another platform's file; not installed here
        esac
    fi
    cp "$bundle/$name" "$work/b/$name"
    [ "$(sha256 "$work/b/$name")" = "$hash" ] || refuse "$bundle/$name does not match its SHA-256 in SHA256SUMS"
done < "$work/b/SHA256SUMS"
say "verified $pex ($version, $platform): signed by $signer"
chmod 0755 "$work/b/$pex"
if ! out=$(python3 "$work/b/$pex" --version 2>&1) || [ "$out" = "${out#*"$version"}" ]; then
    refuse "$pex does not start with this host's python3 ($(python3 -V 2>&1)): $out"
fi
if [ -n "$agent_prefix" ]; then install_agent_packages; fi

target=$prefix/$version
cur=$(current_version)
if [ -d "$target" ] && [ -f "$target/$pex" ] && [ "$(sha256 "$target/$pex")" = "$(sha256 "$work/b/$pex")" ] \
    && cmp -s "$target/SHA256SUMS" "$work/b/SHA256SUMS"; then
    if [ "$cur" = "$version" ]; then
        say "orchestrator-pex $version is already installed and current in $prefix"
        say "changed=$agent_changed"
        exit 0
    fi
    lock_prefix
    swap_link "$version" "$prefix/current"
    if [ -n "$cur" ]; then swap_link "$cur" "$prefix/previous"; fi
    say "switched $prefix/current to the installed $version (was ${cur:-none})"
    say "changed=true"
    exit 0
fi

lock_prefix
stage=$prefix/.$version.new.$$
mkdir "$stage"
sbom=${pex%.pex}.cdx.json
for f in "$pex" SHA256SUMS SHA256SUMS.sig "$sbom" INSTALL.txt; do
    if [ -f "$work/b/$f" ]; then cp "$work/b/$f" "$stage/$f"; fi
done
cp "$work/allowed_signers" "$stage/allowed_signers"
chmod 0755 "$stage/$pex"
ln -s "$pex" "$stage/orchestrator-pex"
if [ "$(sha256 "$stage/$pex")" != "$(sha256 "$work/b/$pex")" ]; then
    rm -rf "$stage"; refuse "copy to $stage is corrupt"
fi
if [ -e "$target" ]; then
    # A broken or different copy of this version: replace it whole.
    mv "$target" "$prefix/.$version.old.$$"
    mv "$stage" "$target"
    rm -rf "$prefix/.$version.old.$$"
else
    mv "$stage" "$target"
fi
if [ "$cur" != "$version" ]; then
    swap_link "$version" "$prefix/current"
    if [ -n "$cur" ]; then swap_link "$cur" "$prefix/previous"; fi
fi
say "installed orchestrator-pex $version ($platform) to $target; current -> $version (was ${cur:-none})"
say "changed=true"
