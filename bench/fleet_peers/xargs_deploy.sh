#!/bin/sh
# The shell peer of bench_fleet.py: what people write today - OpenSSH scp/ssh driven by `xargs -P`.
# One board per stdin line ("user@host"). Per board, the same work deployer does for a release:
#   deploy: skip if the board already serves it; else scp to a temp name, sha256 on the board, rename into
#           releases/<sha>/model, point a fresh symlink at it and rename it over `current` (mv -T).
#   read:   print the board's current release.
# usage: xargs_deploy.sh deploy|read FILE SHA KEY KNOWN_HOSTS PARALLEL < boards
set -eu
mode=$1 file=$2 sha=$3 key=$4 known=$5 par=$6
export mode file sha key known
xargs -P "$par" -n 1 sh -c '
h=$1
o="-i $key -o UserKnownHostsFile=$known -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR"
d=.peer-xargs
if [ "$mode" = read ]; then
  ssh $o "$h" "readlink $d/current || echo none" >/dev/null || { echo "FAIL $h"; exit 0; }
  exit 0
fi
now=$(ssh $o "$h" "readlink $d/current 2>/dev/null || true") || { echo "FAIL $h"; exit 0; }
[ "$now" = "releases/$sha" ] && exit 0
scp -q $o "$file" "$h:$d.model.tmp" 2>/dev/null || { ssh $o "$h" "mkdir -p $d" && scp -q $o "$file" "$h:$d.model.tmp"; } || { echo "FAIL $h"; exit 0; }
ssh $o "$h" "set -e; [ \"\$(sha256sum < $d.model.tmp | cut -c1-64)\" = $sha ]; mkdir -p $d/releases/$sha; \
  mv $d.model.tmp $d/releases/$sha/model; ln -sfn releases/$sha $d/current.tmp; mv -T $d/current.tmp $d/current" \
  || echo "FAIL $h"
' _
