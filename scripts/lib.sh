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
