#!/bin/bash
# kernel-bisect.sh TREE GOOD BAD [vm options...] — finds the commit between GOOD and BAD that
# made the exerciser fail: `git bisect run scripts/bisect-step.sh` in TREE (a git checkout of a
# configured kernel; KBUILD_OUTPUT=DIR for an out-of-tree build). Prints the bisect log and the
# first bad commit, then resets the tree to where it was.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[[ $# -ge 3 ]] || { echo "usage: kernel-bisect.sh TREE GOOD BAD [vm options...]" >&2; exit 2; }
tree=$1 good=$2 bad=$3
shift 3
cd "$tree"
git bisect reset >/dev/null 2>&1 || true
git bisect start "$bad" "$good" >/dev/null
trap 'git bisect reset >/dev/null 2>&1 || true' EXIT
start=$SECONDS
git bisect run "$here/bisect-step.sh" "$tree" "$@"
git bisect log
first=$(git rev-parse refs/bisect/bad)
echo "first bad commit: $(git log -1 --format='%h %s' "$first") (bisect took $((SECONDS - start)) s)"
