# Shared helpers for the VM harness scripts (sourced, not executed).
# shellcheck shell=bash

die() {
    echo "$(basename "$0"): error: $*" >&2
    exit 1
}

log() {
    echo "$(basename "$0"): $*" >&2
}

_apt_updated=0

# need_pkgs CMD:PKG... — apt-get install PKG for every CMD not on PATH
# (a CMD starting with / is a file that must exist instead).
need_pkgs() {
    local spec cmd pkg missing=()
    for spec in "$@"; do
        cmd=${spec%%:*}
        pkg=${spec#*:}
        if [[ $cmd == /* ]]; then
            [[ -e $cmd ]] && continue
        else
            command -v "$cmd" >/dev/null 2>&1 && continue
        fi
        missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    install_pkgs "${missing[@]}"
}

# install_pkgs PKG...: apt-get update (once) + install.
install_pkgs() {
    [[ $(id -u) -eq 0 ]] || die "need packages $* but not root to install them"
    log "installing $*"
    if [[ $_apt_updated -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
        _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 \
        || die "apt-get install $* failed"
}

# --- private apt (the configuration fetch-kernel.sh sets up) -------------------
# private_apt CACHE_DIR: export APT_CONFIG for the private apt tree that
# fetch-kernel.sh made under CACHE_DIR/apt (its sources, lists, archives; the
# machine's /etc/apt is not read). The configuration is (re)written here, to
# CACHE_DIR/apt/apt-lib.conf, so a cache directory that was moved or copied
# still works. Dies if fetch-kernel.sh has not been run for CACHE_DIR.
private_apt() {
    local apt=$1/apt
    [[ -f $apt/debian.sources ]] \
        || die "no private apt configuration in $1/apt (run scripts/fetch-kernel.sh SPEC $1 first)"
    mkdir -p "$apt"/{etc/parts,etc/prefs,lists/partial,archives/partial}
    [[ -f $apt/status ]] || : >"$apt/status"
    cat >"$apt/apt-lib.conf" <<CONF
Dir::Etc::parts "$apt/etc/parts";
Dir::Etc::main "/dev/null";
Dir::Etc::sourcelist "$apt/debian.sources";
Dir::Etc::sourceparts "$apt/etc/parts";
Dir::Etc::preferences "/dev/null";
Dir::Etc::preferencesparts "$apt/etc/prefs";
Dir::State "$apt";
Dir::State::lists "$apt/lists";
Dir::State::status "$apt/status";
Dir::Cache "$apt";
Dir::Cache::archives "$apt/archives";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
Acquire::Languages "none";
Acquire::Retries "3";
APT::Sandbox::User "root";
CONF
    export APT_CONFIG=$apt/apt-lib.conf
}

# private_apt_version PKG: newest version of PKG in the private lists ("" if none).
private_apt_version() {
    apt-cache madison "$1" 2>/dev/null | awk -F' [|] ' '{gsub(/ /,"",$2); print $2; exit}'
}

# private_apt_has PKG VERSION: true if PKG=VERSION is in the private lists.
private_apt_has() {
    apt-cache madison "$1" 2>/dev/null | awk -F' [|] ' -v v="$2" '{gsub(/ /,"",$2)} $2 == v {f=1} END {exit !f}'
}
